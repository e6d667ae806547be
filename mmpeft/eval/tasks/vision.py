"""``VisionDriftTask``: how far the adapted vision tower's features moved from the base tower's
(``mmpeft.eval.vision_probe.vision_drift``) on the images of evaluation shards."""

from __future__ import annotations

from typing import Any

import torch

from mmpeft.data.schema import SampleError
from mmpeft.data.shard_specs import resolve_shards
from mmpeft.eval.generate import count_skip, read_eval_records
from mmpeft.eval.task import EvalContext, EvalTask, TaskResult
from mmpeft.eval.tasks.generation import nothing_left
from mmpeft.eval.vision_probe import vision_drift
from mmpeft.vlm import VisionLanguageModel


class VisionDriftTask(EvalTask):
    """Linear CKA and cosine similarities between adapted and base vision features (first image of each record),
    and with ``label_field`` the accuracy of a linear probe on each tower's features.

    Args:
        shards: image shards (a directory, glob, brace pattern, or a list).
        name: the key of the scores (default ``vision``).
        label_field: an ``eval`` field holding a class label, for the linear probe (every record must have it).

    A record without images is a counted skip (``no_image``); ``limit`` bounds the images used.
    """

    reads_shards = True

    def __init__(self, shards: str | list[str], name: str = "vision", label_field: str | None = None):
        self.shards, self.name, self.label_field = shards, name, label_field

    def check(self) -> None:
        resolve_shards(self.shards)  # a missing shard directory fails before the model loads or anything runs

    def run(self, vlm: VisionLanguageModel, context: EvalContext) -> TaskResult:
        pixels, labels = [], []
        for record, image, where in read_eval_records(resolve_shards(self.shards), vlm.vision.image_transform,
                                                      context.skips, context.audit):
            if image is None:  # counted: a vision probe over a set with text rows measured fewer images than it read
                count_skip(SampleError("no_image", "a record without images: nothing for the vision probe", where),
                           context.skips, context.audit)
                continue
            pixels.append(image[:1])
            if self.label_field:
                if self.label_field not in record["eval"]:
                    raise ValueError(f"record {record['id']!r} ({where}) has no eval.{self.label_field} for the "
                                     "linear probe")
                labels.append(record["eval"][self.label_field])
            if context.limit is not None and len(pixels) >= context.limit:
                break
        if not pixels:
            nothing_left(self, self.shards, context)
            return TaskResult({"images": 0})
        size = context.batch_size
        batches = [torch.cat(pixels[i : i + size]) for i in range(0, len(pixels), size)]
        return TaskResult(vision_drift(vlm, batches, labels if self.label_field else None))

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "cka" not in scores:
            return [f"{self.name}: no image compared"]
        return [f"vision drift: CKA {scores['cka']:.4f}, cosine {scores['cosine_pooled']:.4f}"]
