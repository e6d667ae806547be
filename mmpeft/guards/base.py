"""The guard contract: a named, weighted loss term computed from the step's batch and forward pass.

The module sums ``guard.weight * guard(ctx)`` over its guards and logs each term. Guards that compare against the
base model ask for reference rows; the module then runs one no-grad forward of those rows with every adapter
disabled (``disabled_adapters``: the base, no second model copy) and hands its hidden states in the context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmpeft.types import Batch, VLMOutput
from mmpeft.vlm import VisionLanguageModel


@dataclass
class GuardContext:
    """What a guard sees in one training step.

    Attributes:
        vlm: the model (adapters enabled).
        batch: the collated ``Batch`` (``input_ids``/``labels``/``attention_mask`` ``[B, T]``, ``has_image`` ``[B]``).
        output: the adapted forward of the whole batch, aligned with it: ``hidden_states [B, T, D]`` (a soft
            prompt stays inside the model), so position t of ``batch["labels"]`` is position t of the output.
        reference_rows: ``[B]`` bool, rows the reference pass covered (None without a reference pass).
        reference_hidden: ``[R, T, D]`` base hidden states of those rows, in batch order.
        global_count / world_size: for means over the global batch under data parallelism (see ``mean``).
    """

    vlm: VisionLanguageModel
    batch: Batch
    output: VLMOutput
    reference_rows: torch.Tensor | None = None
    reference_hidden: torch.Tensor | None = None
    global_count: Callable[[int], int] | None = None  # sums a per-rank count over ranks (None: one process)
    world_size: int = 1

    def mean(self, total: torch.Tensor, count: int) -> torch.Tensor:
        """``total / count`` taken over the *global* batch: with W ranks, ``total * W / sum of counts``, so that
        DDP's gradient averaging yields the single-process gradient of the same global batch."""
        n = self.global_count(count) if self.global_count is not None else count
        return total * (self.world_size / n) if n else self.zero()

    @property
    def text_rows(self) -> torch.Tensor:
        """``[B]`` bool: rows without images (replay rows)."""
        return ~self.batch["has_image"].to(self.output.hidden_states.device)

    def zero(self) -> torch.Tensor:
        """A zero that keeps the graph (and DDP's gradient structure) when a term has nothing to act on."""
        return self.output.hidden_states.sum() * 0.0


class Guard:
    """Base of all guards.

    Args:
        weight: multiplier of the term in the total loss.
    """

    name: str = "guard"
    needs_text_rows: bool = False  # the data must deliver text-only rows (data.text_ratio > 0)

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def setup(self, vlm: VisionLanguageModel) -> None:
        """Called once the model is built (snapshots, loading statistics, shape checks)."""

    def reference_rows(self, batch: Batch) -> torch.Tensor | None:
        """``[B]`` bool of rows whose base-model outputs this guard needs, or None."""
        return None

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to keep in checkpoints (e.g. starting points of fully trained weights)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()`` after ``setup`` on resume."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"
