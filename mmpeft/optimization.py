"""Optimisation settings of a training run: learning rates per parameter group, the options AdamW and the schedule
take (checked before anything is built), and the warmup + cosine schedule over ``trainer.max_steps``."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class LearningRates:
    """Peak learning rate per parameter group.

    Attributes:
        projector: the projector.
        vision: vision-tower adapters (or the tower when fully trained).
        llm: LLM adapters (or the LLM when fully trained).
        soft_prompt: the soft prompt.
    """

    projector: float = 1e-3
    vision: float = 2e-4
    llm: float = 2e-4
    soft_prompt: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("projector", "vision", "llm", "soft_prompt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"model.lr.{name}={value!r}: a learning rate must be a finite number >= 0 "
                                 "(0 keeps that group's weights where they start)")


def check_optimizer_options(weight_decay: float, betas: tuple[float, float], warmup_steps: int,
                            min_lr_ratio: float) -> None:
    """Raise naming the ``model.*`` option whose value AdamW or the schedule cannot use (run before towers load)."""
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"model.weight_decay={weight_decay}: must be >= 0")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"model.betas={list(betas)}: two values in [0, 1), e.g. [0.9, 0.999]")
    if warmup_steps < 0:
        raise ValueError(f"model.warmup_steps={warmup_steps}: must be >= 0")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"model.min_lr_ratio={min_lr_ratio}: must be in [0, 1] (the floor of the cosine schedule "
                         "as a share of the peak)")


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """The learning-rate factor at ``step``: linear warmup over ``warmup`` steps to 1, then a cosine decay to
    ``floor`` at ``total`` steps (held there after)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
