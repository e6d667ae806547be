"""Writing webdataset shards: deterministic, resumable, with a manifest written last.

Input items are split into shards by *input position* (shard ``i`` holds items ``[i*n, (i+1)*n)`` that survive
validation), so a re-run reproduces the same shards and a resumed run skips the shards already complete. A shard
is complete once its ``.stats.json`` exists; the tar is renamed into place before it. ``manifest.json`` comes
last, so a directory with a manifest is a finished dataset.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm.auto import tqdm

from mmpeft.data.schema import SCHEMA_VERSION, SampleError, check_key, validate_record
from mmpeft.data.skips import SkipLog

MANIFEST = "manifest.json"


@dataclass
class PreparedSample:
    """One sample ready to write: its key, JSON record and image files ``{field: bytes}`` (``img0.jpg`` ...)."""

    key: str
    record: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def write_shards(
    items: Sequence[Any],
    prepare: Callable[[Any], PreparedSample],
    out_dir: str | Path,
    *,
    prefix: str = "shard",
    samples_per_shard: int = 1000,
    skips: SkipLog | None = None,
    workers: int = 4,
    description: str = "",
) -> dict[str, Any]:
    """Convert ``items`` with ``prepare`` (which raises ``SampleError`` for bad ones) into shards + manifest.

    Args:
        items: the source records, in a deterministic order.
        prepare: item -> ``PreparedSample``; does the I/O (image reads) and validation. Run on ``workers`` threads.
        out_dir: output directory (created). Existing complete shards are kept (resume).
        samples_per_shard: input items per shard.
        skips: where bad items are counted (default: a fresh non-strict ``SkipLog``).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skips = skips or SkipLog()
    num_shards = max(1, -(-len(items) // samples_per_shard))
    shard_stats = []
    resumed = 0
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(items), desc=description or f"writing {out}", unit="sample") as bar:
        for index in range(num_shards):
            name = f"{prefix}-{index:06d}.tar"
            stats_path = out / f"{prefix}-{index:06d}.stats.json"
            chunk = items[index * samples_per_shard : (index + 1) * samples_per_shard]
            if stats_path.exists() and (out / name).exists():
                stats = json.loads(stats_path.read_text())
                skips.merge(stats["skipped"])
                resumed += 1
            else:
                stats = _write_one_shard(out / name, chunk, prepare, pool, skips)
                write_json_atomic(stats_path, stats)
            shard_stats.append({"name": name, **stats})
            bar.update(len(chunk))
    manifest = {
        "schema": SCHEMA_VERSION,
        "num_samples": sum(s["samples"] for s in shard_stats),
        "image_samples": sum(s["image_samples"] for s in shard_stats),
        "text_samples": sum(s["samples"] - s["image_samples"] for s in shard_stats),
        "sources": dict(sum((Counter(s["sources"]) for s in shard_stats), Counter())),
        "skipped": dict(sum((Counter(s["skipped"]) for s in shard_stats), Counter())),
        "input_items": len(items),
        "shards": shard_stats,
    }
    write_json_atomic(out / MANIFEST, manifest)
    print(f"{out}: {manifest['num_samples']} samples in {num_shards} shard(s) ({resumed} kept from an earlier run); "
          + skips.report("input items"))
    return manifest


def _write_one_shard(path: Path, chunk: Sequence[Any], prepare, pool, skips: SkipLog) -> dict[str, Any]:
    local = SkipLog(strict=skips.strict, examples=skips.examples)
    sources: Counter[str] = Counter()
    samples = image_samples = 0

    def attempt(item):
        try:
            return prepare(item)
        except SampleError as e:
            return e

    tmp = path.with_name(path.name + ".tmp")
    with wds.TarWriter(str(tmp), mtime=0.0) as writer:  # fixed mtime: identical inputs give identical bytes
        for result in pool.map(attempt, chunk):
            if isinstance(result, SampleError):
                local.skip(result)
                continue
            check_key(result.key, where=result.record.get("id", ""))
            validate_record(result.record, where=f"{path.name}:{result.key}")
            if sorted(result.files) != sorted(result.record["images"]):
                raise ValueError(f"{result.key}: files {sorted(result.files)} != images {result.record['images']}")
            writer.write({"__key__": result.key, "json": json.dumps(result.record).encode(), **result.files})
            samples += 1
            image_samples += bool(result.record["images"])
            sources[result.record["source"]] += 1
    os.replace(tmp, path)
    skips.merge(local.counts)
    for reason, msgs in local.messages.items():
        skips.messages.setdefault(reason, []).extend(msgs[: skips.examples - len(skips.messages.get(reason, []))])
    return {"samples": samples, "image_samples": image_samples, "sources": dict(sources),
            "skipped": dict(local.counts)}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a finished shard directory; a clear error if the conversion never finished."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {directory} is not a finished mmpeft shard directory "
                                "(re-run its data_prep converter; it resumes)")
    return json.loads(path.read_text())


def shard_urls(directory: str | Path) -> list[str]:
    """The shard paths listed in a directory's manifest, in order."""
    manifest = read_manifest(directory)
    return [str(Path(directory) / s["name"]) for s in manifest["shards"] if s["samples"] > 0]


def add_writer_arguments(parser) -> None:
    """The output options every data_prep converter shares."""
    parser.add_argument("--out", required=True, help="output directory for shards + manifest.json (resumable)")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="input items per shard")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    parser.add_argument("--workers", type=int, default=4, help="threads reading and verifying images")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first bad item instead of skipping and counting it")


def write_shards_from_args(args, items: Sequence[Any], prepare: Callable[[Any], PreparedSample],
                           description: str) -> dict[str, Any]:
    return write_shards(items, prepare, args.out, prefix=args.prefix, samples_per_shard=args.samples_per_shard,
                        skips=SkipLog(strict=args.strict), workers=args.workers, description=description)
