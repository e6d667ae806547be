"""Collation: rendered rows -> the model's batch (``mmpeft.types``), padded to the batch's longest row only.

Also length bucketing for streams: rows are grouped with rows of similar length within a bounded window, so
padding shrinks without a global index.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from mmpeft.types import IGNORE_INDEX


class Collator:
    """Right-pads ``input_ids`` / ``labels`` to the longest row (optionally to a multiple), stacks pixels.

    A row is a dict with ``input_ids`` and ``labels`` (1-D long tensors), ``pixel_values`` (``[n, 3, H, W]`` or
    None) and metadata ``id``, ``source``, ``eval``. The batch adds ``attention_mask``, ``has_image`` ``[B]`` and
    ``num_images`` ``[B]`` (per-row modality flags), and keeps the metadata as lists.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        b = len(rows)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((b, length), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            input_ids[i, :n] = r["input_ids"]
            labels[i, :n] = r["labels"]
            attention_mask[i, :n] = 1
        pixels = [r["pixel_values"] for r in rows if r.get("pixel_values") is not None]
        num_images = torch.tensor([0 if r.get("pixel_values") is None else len(r["pixel_values"]) for r in rows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.cat(pixels) if pixels else None,
            "has_image": num_images > 0,
            "num_images": num_images,
            "id": [r.get("id") for r in rows],
            "source": [r.get("source") for r in rows],
            "eval": [r.get("eval", {}) for r in rows],
        }


def select_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The sub-batch of ``rows`` (``[B]`` bool): tensors indexed, images of those rows kept, lists filtered."""
    rows = rows.to(batch["input_ids"].device)
    sub = {k: v[rows] for k, v in batch.items() if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == len(rows)
           and k != "pixel_values"}
    pixels = batch.get("pixel_values")
    if pixels is not None:
        per_row = torch.repeat_interleave(rows.cpu(), batch["num_images"].cpu())
        sub["pixel_values"] = pixels[per_row.to(pixels.device)] if bool(per_row.any()) else None
    else:
        sub["pixel_values"] = None
    keep = rows.tolist()
    for k, v in batch.items():
        if isinstance(v, list) and len(v) == len(keep):
            sub[k] = [x for x, flag in zip(v, keep) if flag]
    return sub


def batch_rows(rows: Iterable[dict[str, Any]], batch_size: int, collate: Collator, *, bucket_window: int = 0,
               seed: int = 0, drop_last: bool = False) -> Iterator[dict[str, Any]]:
    """Group a row stream into collated batches.

    Args:
        bucket_window: 0 keeps stream order. N > 0 gathers ``N * batch_size`` rows, sorts them by length, cuts
            batches and yields those in a seeded random order (length bucketing within a bounded window).
        drop_last: drop a final batch smaller than ``batch_size``.
    """
    rng = random.Random(seed)
    window = max(1, bucket_window) * batch_size
    buffer: list[dict[str, Any]] = []

    def flush(final: bool) -> Iterator[dict[str, Any]]:
        if bucket_window:
            buffer.sort(key=lambda r: len(r["input_ids"]))
        batches = [buffer[i : i + batch_size] for i in range(0, len(buffer), batch_size)]
        if batches and len(batches[-1]) < batch_size and (drop_last or not final):
            leftover = batches.pop()
        else:
            leftover = []
        if bucket_window:
            rng.shuffle(batches)
        buffer[:] = leftover
        for batch in batches:
            yield collate(batch)

    for row in rows:
        buffer.append(row)
        if len(buffer) >= window:
            yield from flush(final=False)
    yield from flush(final=True)
