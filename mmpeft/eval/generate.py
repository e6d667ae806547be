"""Batched generation over evaluation shards: each record's prompt (its turns up to the last user turn, through
the same ``ChatRenderer`` as training) and images in, the model's answer out, with the record's eval fields."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.images import decode_image
from mmpeft.data.integrity import ShardAudit, ShardReader, manifest_counts
from mmpeft.data.schema import SampleError, validate_record
from mmpeft.data.skips import SkipLog
from mmpeft.vlm import VisionLanguageModel


def read_eval_records(urls: list[str], image_transform: Callable[[Any], torch.Tensor], skips: SkipLog,
                      audit: ShardAudit | None = None) -> Iterator[tuple[dict[str, Any], torch.Tensor | None]]:
    """``(record, pixels [n, 3, H, W] | None)`` for every usable sample of the shards, in order.

    Skipped samples are counted in ``skips`` (and ``audit``); each shard read to its end is checked against its
    manifest count into ``audit`` (which raises ``PartialData`` at the first loss when partial sets are refused).
    A tar error stops that shard only; its lost rows are reported, never a raw traceback or a quiet end.
    """
    audit = audit if audit is not None else ShardAudit()
    expected = manifest_counts(urls)
    for url in urls:
        reader = ShardReader(url)
        for sample in reader:
            where = f"{sample.get('__url__')}:{sample.get('__key__')}"
            try:
                record = validate_record(json.loads(sample["json"]), where)
                images = [image_transform(decode_image(sample[f], where)) for f in record["images"]]
            except SampleError as e:
                error = e
            except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
                error = SampleError("malformed_json", f"unreadable sample ({e})", where)
            else:
                yield record, (torch.stack(images) if images else None)
                continue
            skips.skip(error)
            audit.skip(error)
        audit.finish(reader.outcome(expected[url]))


def predict(vlm: VisionLanguageModel, renderer: ChatRenderer, urls: list[str], batch_size: int = 8,
            max_new_tokens: int = 32, skips: SkipLog | None = None, limit: int | None = None,
            description: str = "generate", audit: ShardAudit | None = None) -> list[dict[str, Any]]:
    """Greedy answers for the records of ``urls``: ``[{"id", "prediction", "eval", "source"}]``.

    ``audit`` collects skipped samples and lost rows per shard (see ``read_eval_records``)."""
    skips = skips or SkipLog()
    out: list[dict[str, Any]] = []
    batch: list[tuple[dict[str, Any], torch.Tensor | None]] = []
    bar = tqdm(desc=description, unit="sample", total=limit)

    def flush() -> None:
        prompts = [renderer.render_prompt(rec["conversations"]) for rec, _ in batch]
        pixels = [p for _, p in batch if p is not None]
        ids = vlm.generate_ids(prompts, torch.cat(pixels) if pixels else None, max_new_tokens=max_new_tokens)
        texts = vlm.llm.tokenizer.batch_decode(ids, skip_special_tokens=True)
        for (rec, _), text in zip(batch, texts):
            out.append({"id": rec["id"], "prediction": text.strip(), "eval": rec.get("eval", {}),
                        "source": rec["source"]})
        bar.update(len(batch))
        batch.clear()

    for record, pixels in read_eval_records(urls, vlm.vision.image_transform, skips, audit):
        if record.get("conversations") is None:
            continue  # plain-text records have nothing to answer
        batch.append((record, pixels))
        if len(batch) == batch_size:
            flush()
        if limit is not None and len(out) + len(batch) >= limit:
            break
    if batch:
        flush()
    bar.close()
    return out
