"""Writing webdataset shards: deterministic, resumable, with a manifest written last.

Input items are split into shards by *input position* (shard ``i`` holds items ``[i*n, (i+1)*n)`` that survive
validation), so a re-run reproduces the same shards and a resumed run skips the shards already complete. A shard
is complete once its ``.stats.json`` exists; the tar is renamed into place before it. ``manifest.json`` comes
last, so a directory with a manifest is a finished dataset.

Resume is only safe into an output made by the same conversion, so ``fingerprint.json`` (written atomically before
any shard) records what shapes the output: the writer's prefix, samples per shard and input count, plus whatever
the caller adds (a converter adds its name, its options and a sha256 of each input file). A run whose fingerprint
differs from the one on disk, or that finds shards without one, refuses (``OutputMismatch`` naming each difference)
unless told to overwrite, which deletes the old shards first: outputs are never mixed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm.auto import tqdm

from mmpeft import atomic
from mmpeft.data.schema import SCHEMA_VERSION, SampleError, check_key, validate_record
from mmpeft.data.skips import SkipLog
from mmpeft.data.source_files import file_fingerprint

MANIFEST = "manifest.json"
FINGERPRINT = "fingerprint.json"
# the shard files write_shards makes (and only those are ever deleted by --overwrite); temp files of atomic writes
# are <name>.tmp (older mmpeft) or <name>.<16 hex>.tmp (mmpeft.atomic.temp_path), left behind by a killed run
_TEMP = r"(\.[0-9a-f]{16})?\.tmp"
_WRITTEN = re.compile(rf"^[A-Za-z0-9_\-]+-\d{{6,}}\.(tar|stats\.json)({_TEMP})?$")
_WRITTEN_TOP = re.compile(rf"^({re.escape(MANIFEST)}|{re.escape(FINGERPRINT)})({_TEMP})?$")


@dataclass
class PreparedSample:
    """One sample ready to write: its key, JSON record and image files ``{field: bytes}`` (``img0.jpg`` ...).

    ``changes`` tags what the converter altered relative to the source record (e.g. ``image_marker_moved``); they
    are counted per tag in the manifest's ``changed``, so no edit of the source goes unreported.
    """

    key: str
    record: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    changes: tuple[str, ...] = ()


class OutputMismatch(ValueError):
    """The output directory holds shards of another conversion (or of one that recorded no fingerprint)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON (indent 2, sorted keys) through ``mmpeft.atomic`` (temp file, fsync, replace)."""
    atomic.write_json_atomic(path, data, indent=2, sort_keys=True)


def claim_output(out_dir: str | Path, fingerprint: dict[str, Any], overwrite: bool = False,
                 subdirs: Sequence[str] = ()) -> None:
    """Make ``out_dir`` the output of the conversion ``fingerprint`` describes, before any shard is written.

    ``subdirs``: names of the subdirectories the conversion writes its shards into (one per split); their shard
    files count as its output too. Only these are looked into, so other datasets beside them are never touched.

    ``overwrite``: delete what ``write_shards`` made there (manifest, fingerprint, shards, stats, temp files), then
    start afresh. Otherwise: the same fingerprint on disk is a resume (nothing changes); no shards yet, this
    fingerprint is written; anything else (another fingerprint, or shards with none) raises ``OutputMismatch``
    naming every difference.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [out] + [out / name for name in subdirs]
    wanted = json.loads(json.dumps(fingerprint))  # the form it has on disk (tuples -> lists, str keys)
    path = out / FINGERPRINT
    if overwrite:
        for d in dirs:
            remove_outputs(d)
        write_json_atomic(path, wanted)
        return
    try:
        recorded = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        recorded = {"unreadable": str(path)}
    if recorded == wanted:
        return
    written = [p for d in dirs for p in remove_outputs(d, dry_run=True) if p != path]
    if not written:  # nothing to mix with (a fresh directory, or a run stopped before its first shard)
        write_json_atomic(path, wanted)
        return
    if recorded is None:
        why = (f"it holds {len(written)} shard file(s) but no {FINGERPRINT} (written by an older mmpeft or another "
               "tool), so it cannot be told whether they match this conversion")
    else:
        why = "it was written by a different conversion:\n" + "\n".join(
            f"  {key}: {old!r} there, {new!r} now" for key, old, new in _differences(recorded, wanted))
    raise OutputMismatch(f"{out}: refusing to resume into this output, {why}.\nResuming would mix the two. Rerun "
                         "with --overwrite (overwrite=True) to delete its shards and convert from scratch, or write "
                         "to another --out.")


def remove_outputs(out_dir: str | Path, dry_run: bool = False) -> list[Path]:
    """The files ``write_shards`` makes in ``out_dir`` (manifest first, so the directory stops reading as finished),
    deleted unless ``dry_run``; anything else there is left alone."""
    out = Path(out_dir)
    found = [out / name for name in (MANIFEST, FINGERPRINT) if (out / name).is_file()]
    if out.is_dir():
        found += sorted(p for p in out.iterdir() if p.name not in (MANIFEST, FINGERPRINT) and p.is_file()
                        and (_WRITTEN_TOP.match(p.name) or _WRITTEN.match(p.name)))
    if not dry_run:
        for p in found:
            p.unlink()
    return found


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [(prefix or "fingerprint", old, new)]


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
    fingerprint: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert ``items`` with ``prepare`` (which raises ``SampleError`` for bad ones) into shards + manifest.

    Args:
        items: the source records, in a deterministic order. An item may be a ``SampleError`` (a record the
            converter found bad while loading): it is counted as that skip in the shard where it falls.
        prepare: item -> ``PreparedSample``; does the I/O (image reads) and validation. Run on ``workers`` threads.
        out_dir: output directory (created). Existing complete shards are kept (resume) when its fingerprint
            matches; see ``claim_output``.
        samples_per_shard: input items per shard.
        skips: where bad items are counted (default: a fresh non-strict ``SkipLog``).
        fingerprint: what else shapes the output (converter, options, input file hashes); the writer adds its own
            ``prefix``, ``samples_per_shard``, input count and schema version under ``writer``.
        overwrite: replace an output made by another conversion instead of refusing (``OutputMismatch``).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``), with ``fingerprint`` and ``changed`` (counts of
        ``PreparedSample.changes`` tags).
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard={samples_per_shard}; it must be at least 1")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", prefix):
        raise ValueError(f"shard prefix {prefix!r} may hold only letters, digits, '_' and '-'")
    out = Path(out_dir)
    fingerprint = {**(fingerprint or {}), "writer": {"prefix": prefix, "samples_per_shard": samples_per_shard,
                                                     "input_items": len(items), "schema": SCHEMA_VERSION}}
    claim_output(out, fingerprint, overwrite)
    skips = skips or SkipLog()
    num_shards = max(1, -(-len(items) // samples_per_shard))
    shard_stats = []
    resumed = resumed_skips = 0
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
                resumed_skips += sum(stats["skipped"].values())
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
        "changed": dict(sum((Counter(s.get("changed", {})) for s in shard_stats), Counter())),
        "input_items": len(items),
        "fingerprint": json.loads(json.dumps(fingerprint)),
        "shards": shard_stats,
    }
    write_json_atomic(out / MANIFEST, manifest)
    kept = f"{resumed} kept from an earlier run"
    if resumed_skips:  # e.g. images added to --image-root since: those skips stay until a rerun with --overwrite
        kept += f", with {resumed_skips} of the skips below; --overwrite retries them"
    changed = ", ".join(f"{k}: {v}" for k, v in sorted(manifest["changed"].items()))
    print(f"{out}: {manifest['num_samples']} samples in {num_shards} shard(s) ({kept}); "
          + (f"changed from the source: {changed}; " if changed else "") + skips.report("input items"))
    return manifest


def _write_one_shard(path: Path, chunk: Sequence[Any], prepare, pool, skips: SkipLog) -> dict[str, Any]:
    local = SkipLog(strict=skips.strict, examples=skips.examples)
    sources: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    samples = image_samples = 0

    def attempt(item):
        if isinstance(item, SampleError):  # a source record its converter already found bad while loading
            return item
        try:
            return prepare(item)
        except SampleError as e:
            return e

    # fixed mtime: identical inputs give identical bytes
    with atomic.atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as writer:
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
            changed.update(result.changes)
    skips.merge(local.counts)
    for reason, msgs in local.messages.items():
        skips.messages.setdefault(reason, []).extend(msgs[: skips.examples - len(skips.messages.get(reason, []))])
    return {"samples": samples, "image_samples": image_samples, "sources": dict(sources),
            "skipped": dict(local.counts), "changed": dict(changed)}


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a finished shard directory; a clear error if the conversion never finished."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {directory} is not a finished mmpeft shard directory "
                                "(re-run its data_prep converter; it resumes)")
    try:
        manifest = json.loads(path.read_text())
        # readers compare what they read with these counts (mmpeft.data.integrity)
        if not all(isinstance(s["name"], str) and isinstance(s["samples"], int) for s in manifest["shards"]):
            raise TypeError("a shard entry's name is not a string or its samples not an integer")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable mmpeft manifest ({type(e).__name__}: {e}); re-run the data_prep "
                         "converter that wrote the directory (it rewrites the manifest last)") from e
    return manifest


def shard_urls(directory: str | Path) -> list[str]:
    """The shard paths listed in a directory's manifest, in order."""
    manifest = read_manifest(directory)
    return [str(Path(directory) / s["name"]) for s in manifest["shards"] if s["samples"] > 0]


def add_writer_arguments(parser) -> None:
    """The output options every data_prep converter shares."""
    parser.add_argument("--out", required=True,
                        help="output directory for shards + manifest.json (a rerun resumes it, but only with the same "
                             "options and input files: see --overwrite)")
    parser.add_argument("--samples-per-shard", type=positive_int, default=1000, help="input items per shard")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    parser.add_argument("--workers", type=int, default=4, help="threads reading and verifying images")
    parser.add_argument("--strict", action="store_true",
                        help="fail on the first bad item instead of skipping and counting it")
    parser.add_argument("--overwrite", action="store_true",
                        help="if --out holds shards of a conversion with other options or inputs, delete them and "
                             "convert from scratch (without it such a rerun refuses: resuming would mix outputs)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def write_shards_from_args(args, items: Sequence[Any], prepare: Callable[[Any], PreparedSample], description: str,
                           *, converter: str, options: dict[str, Any], inputs: dict[str, Path]) -> dict[str, Any]:
    """``write_shards`` for a data_prep script: ``converter`` (its name), ``options`` (every option that shapes
    the output; paths resolved) and ``inputs`` (option name -> input file, hashed) make its fingerprint. A refused
    resume exits with the message, and so does a conversion that kept no sample of a non-empty input (a wrong
    image root or field: an empty output is never what was asked for; the manifest still records the skips)."""
    fingerprint = {"converter": converter, "options": options,
                   "inputs": {name: file_fingerprint(path) for name, path in inputs.items() if path is not None}}
    skips = SkipLog(strict=args.strict)
    try:
        manifest = write_shards(items, prepare, args.out, prefix=args.prefix,
                                samples_per_shard=args.samples_per_shard, skips=skips, workers=args.workers,
                                description=description, fingerprint=fingerprint, overwrite=args.overwrite)
    except OutputMismatch as e:
        raise SystemExit(str(e)) from e
    if manifest["input_items"] and not manifest["num_samples"]:
        raise SystemExit(f"{args.out}: none of the {manifest['input_items']} input items was converted; "
                         + skips.report("input items") + "\nFix the cause above (e.g. the image root) and run "
                         "again with --overwrite (this empty output records the options and skips it was made with).")
    return manifest
