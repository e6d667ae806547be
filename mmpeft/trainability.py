"""The trainability table: per component, how it trains and how many parameters train or stay frozen."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TrainabilityRow:
    component: str
    method: str
    trainable: int
    frozen: int


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts of ``module``."""
    trainable = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def format_trainability(rows: list[TrainabilityRow]) -> str:
    """A markdown table of the rows plus a total line (what gets logged at the start of a run)."""
    lines = ["| component | method | trainable | frozen | % trainable |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        total = r.trainable + r.frozen
        lines.append(f"| {r.component} | {r.method} | {r.trainable:,} | {r.frozen:,} | "
                     f"{100 * r.trainable / max(total, 1):.3f} |")
    t, f = sum(r.trainable for r in rows), sum(r.frozen for r in rows)
    lines.append(f"| **total** | | {t:,} | {f:,} | {100 * t / max(t + f, 1):.3f} |")
    return "\n".join(lines)
