"""Distillation to the frozen base: KL to the base LLM on text-only rows, and LwF on image rows.

Both compare the adapted model's next-token distributions with the base's (every adapter off, same weights in
memory) at real positions of the chosen rows: ``KL(p_base || p_adapted)`` averaged over positions, with an optional
temperature (scaled by T^2, as in Hinton et al.). The LM head runs chunk by chunk under activation checkpointing,
so no ``[K, V]`` logits tensor is kept for the backward pass.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mmpeft.guards.base import Guard, GuardContext
from mmpeft.types import Batch


def _rows(batch: Batch, which: str) -> torch.Tensor:
    has_image = batch["has_image"]
    return {"text": ~has_image, "image": has_image, "all": torch.ones_like(has_image)}[which]


def distill_to_base(ctx: GuardContext, rows: torch.Tensor, text_positions_only: bool, temperature: float,
                    chunk_size: int) -> torch.Tensor:
    """Mean over positions of ``T^2 * KL(softmax(base/T) || softmax(adapted/T))`` for ``rows`` (``[B]`` bool)."""
    rows = rows.to(ctx.output.hidden_states.device)
    if not bool(rows.any()):
        return ctx.mean(ctx.zero(), 0)
    if ctx.reference_rows is None or bool((rows & ~ctx.reference_rows).any()):
        raise RuntimeError("reference pass did not cover the rows this guard needs")
    ref_index = ctx.reference_rows.long().cumsum(0) - 1  # row b of the batch -> its row in reference_hidden
    current = ctx.output.hidden_states[rows]  # [n, T, D]
    reference = ctx.reference_hidden[ref_index[rows]]  # [n, T, D]
    positions = ctx.batch["attention_mask"][rows].bool()  # [n, T]
    if text_positions_only:
        positions &= ctx.batch["input_ids"][rows] != ctx.vlm.llm.image_token_id
    current, reference = current[positions], reference[positions]  # [K, D]
    total = current.new_zeros((), dtype=torch.float32)
    for start in range(0, current.shape[0], chunk_size):
        total = total + checkpoint(_chunk_kl, ctx.vlm.llm.head_logits, current[start : start + chunk_size],
                                   reference[start : start + chunk_size], temperature, use_reentrant=False)
    return ctx.mean(total * temperature**2, current.shape[0])


def _chunk_kl(head, current: torch.Tensor, reference: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p_cur = F.log_softmax(head(current).float() / temperature, dim=-1)
    with torch.no_grad():
        log_p_ref = F.log_softmax(head(reference).float() / temperature, dim=-1)
    return F.kl_div(log_p_cur, log_p_ref, log_target=True, reduction="sum")


class KLToBase(Guard):
    """KL from the frozen base LLM to the adapted model on text-only (replay) rows.

    Args:
        weight: multiplier in the total loss.
        rows: ``text`` (replay rows only) or ``all`` (also the text positions of image rows).
        temperature: softening temperature (1: plain KL).
        chunk_size: positions per LM-head chunk.
    """

    name = "kl_to_base"

    def __init__(self, weight: float = 1.0, rows: Literal["text", "all"] = "text", temperature: float = 1.0,
                 chunk_size: int = 1024):
        super().__init__(weight)
        if rows not in ("text", "all"):
            raise ValueError(f"KLToBase.rows={rows!r}; use 'text' or 'all'")
        self.rows = rows
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.needs_text_rows = rows == "text"

    def reference_rows(self, batch: Batch) -> torch.Tensor:
        return _rows(batch, self.rows)

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        return distill_to_base(ctx, _rows(ctx.batch, self.rows), text_positions_only=True,
                               temperature=self.temperature, chunk_size=self.chunk_size)


class LwF(Guard):
    """Learning without Forgetting on image rows: distil the base's outputs at their text positions.

    The base here is the model with every adapter off but the *current* projector (there is no base projector).

    Args:
        weight: multiplier in the total loss.
        temperature: softening temperature (LwF uses 2).
        chunk_size: positions per LM-head chunk.
    """

    name = "lwf"

    def __init__(self, weight: float = 1.0, temperature: float = 2.0, chunk_size: int = 1024):
        super().__init__(weight)
        self.temperature = temperature
        self.chunk_size = chunk_size

    def reference_rows(self, batch: Batch) -> torch.Tensor:
        return _rows(batch, "image")

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        return distill_to_base(ctx, _rows(ctx.batch, "image"), text_positions_only=True,
                               temperature=self.temperature, chunk_size=self.chunk_size)
