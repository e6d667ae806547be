"""Replay: next-token cross-entropy on the text-only rows the data mixes in (``data.text_ratio``)."""

from __future__ import annotations

from mmpeft.guards.base import Guard, GuardContext
from mmpeft.types import IGNORE_INDEX


class Replay(Guard):
    """Cross-entropy on text-only rows, as its own logged term.

    The task loss covers image rows only, so without this guard text-only rows train nothing by themselves (they
    can still feed ``KLToBase``). The mixing ratio lives in the data config (``data.text_ratio``).
    """

    name = "replay"
    needs_text_rows = True

    def __call__(self, ctx: GuardContext):
        labels = ctx.batch["labels"].masked_fill(~ctx.text_rows.unsqueeze(1), IGNORE_INDEX)
        loss, n = ctx.vlm.supervised_loss(ctx.output.hidden_states, labels)
        return ctx.mean(loss * n, n)
