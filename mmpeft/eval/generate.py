"""Batched generation over evaluation shards: each record's prompt (its turns up to the last user turn, through
the same ``ChatRenderer`` as training) and images in, the model's answer out, with the record's eval fields."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.images import decode_image
from mmpeft.data.integrity import ShardAudit, ShardReader, manifest_counts
from mmpeft.data.schema import SampleError, validate_record
from mmpeft.data.skips import SkipLog
from mmpeft.vlm import VisionLanguageModel


class EvalSample(NamedTuple):
    """One usable sample of an evaluation shard: its validated record, its images ``[n, 3, H, W]`` (None: the
    record has none) and where it came from (``<shard>:<key>``, for messages)."""

    record: dict[str, Any]
    pixels: torch.Tensor | None
    where: str


def count_skip(error: SampleError, skips: SkipLog, audit: ShardAudit) -> None:
    """Count one skipped sample in both ledgers (``audit`` raises ``PartialData`` when partial sets are refused)."""
    skips.skip(error)
    audit.skip(error)


def read_eval_records(urls: list[str], image_transform: Callable[[Any], torch.Tensor], skips: SkipLog,
                      audit: ShardAudit | None = None) -> Iterator[EvalSample]:
    """An ``EvalSample`` for every usable sample of the shards, in order.

    Skipped samples are counted in ``skips`` (and ``audit``) under their reason (``malformed_json``,
    ``missing_image`` for an image field the record lists but the shard lacks, ``corrupt_image``, ...); each shard
    read to its end is checked against its manifest count into ``audit`` (which raises ``PartialData`` at the first
    loss when partial sets are refused). A tar error stops that shard only; its lost rows are reported, never a raw
    traceback or a quiet end.
    """
    audit = audit if audit is not None else ShardAudit()
    expected = manifest_counts(urls)
    for url in urls:
        reader = ShardReader(url)
        for sample in reader:
            where = f"{sample.get('__url__')}:{sample.get('__key__')}"
            try:
                if "json" not in sample:
                    raise SampleError("malformed_json", "sample has no .json record", where)
                record = validate_record(json.loads(sample["json"]), where)
                images = []
                for field in record["images"]:
                    if field not in sample:
                        raise SampleError("missing_image", f"image field {field!r} absent from the shard", where)
                    images.append(image_transform(decode_image(sample[field], where)))
            except SampleError as e:
                error = e
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                error = SampleError("malformed_json", f"record is not valid JSON ({e})", where)
            else:
                yield EvalSample(record, torch.stack(images) if images else None, where)
                continue
            count_skip(error, skips, audit)
        audit.finish(reader.outcome(expected[url]))


def predict(vlm: VisionLanguageModel, renderer: ChatRenderer, urls: list[str], batch_size: int = 8,
            max_new_tokens: int = 32, skips: SkipLog | None = None, limit: int | None = None,
            description: str = "generate", audit: ShardAudit | None = None, progress: bool = True,
            ) -> list[dict[str, Any]]:
    """Greedy answers for the records of ``urls``: ``[{"id", "where", "prediction", "eval", "source"}]``.

    A record that cannot be prompted is a counted skip in ``skips`` and ``audit`` (see ``read_eval_records``):
    ``no_prompt`` (a plain-text record) or ``too_long`` (its prompt exceeds ``renderer.max_length``). ``audit``
    (default: one that allows partial sets) also collects lost rows per shard; ``limit`` counts predictions.
    ``progress``: show a progress bar."""
    skips = skips if skips is not None else SkipLog()
    audit = audit if audit is not None else ShardAudit()
    out: list[dict[str, Any]] = []
    batch: list[tuple[EvalSample, list[int]]] = []
    bar = tqdm(desc=description, unit="sample", total=limit, disable=not progress)

    def flush() -> None:
        pixels = [s.pixels for s, _ in batch if s.pixels is not None]
        ids = vlm.generate_ids([prompt for _, prompt in batch], torch.cat(pixels) if pixels else None,
                               max_new_tokens=max_new_tokens)
        texts = vlm.llm.tokenizer.batch_decode(ids, skip_special_tokens=True)
        for (sample, _), text in zip(batch, texts):
            rec = sample.record
            out.append({"id": rec["id"], "where": sample.where, "prediction": text.strip(),
                        "eval": rec.get("eval", {}), "source": rec["source"]})
        bar.update(len(batch))
        batch.clear()

    for sample in read_eval_records(urls, vlm.vision.image_transform, skips, audit):
        try:
            if sample.record.get("conversations") is None:
                raise SampleError("no_prompt", "a plain-text record (no conversations): nothing to ask the model",
                                  sample.where)
            prompt = renderer.render_prompt(sample.record["conversations"], sample.where)
        except SampleError as e:
            count_skip(e, skips, audit)
            continue
        batch.append((sample, prompt))
        if len(batch) == batch_size:
            flush()
        if limit is not None and len(out) + len(batch) >= limit:
            break
    if batch:
        flush()
    bar.close()
    return out
