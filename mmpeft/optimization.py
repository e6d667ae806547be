"""Optimisation settings of a training run: learning rates per parameter group, the options AdamW and the schedule
take (checked before anything is built), and the warmup + cosine schedule over ``trainer.max_steps`` (transformers')."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


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


def warmup_cosine_schedule(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                           min_lr_ratio: float) -> LambdaLR:
    """Each parameter group's learning rate, as a factor of its peak, per optimizer step ``s`` (0-based):
    ``(s + 1) / warmup_steps`` while ``s < warmup_steps`` (the first step already trains, at ``peak / warmup``),
    then a half cosine from 1 down to ``min_lr_ratio``, reached at the last step ``s = total_steps - 1``.

    transformers' ``get_cosine_with_min_lr_schedule_with_warmup_lr_rate`` (``warmup_lr_rate=None``, one half cycle;
    transformers 5.24.0 ``src/transformers/optimization.py``, the same formula since 4.57, this package's lower
    bound). It is a ``LambdaLR`` over a ``functools.partial``, so the scheduler state in a checkpoint (``last_epoch``
    and each group's base rate) resumes the same values.

    The schedule mmpeft computed by hand before differed only in the decay, by one step: its cosine started at
    ``s = warmup_steps`` (so the peak was held for two steps) and reached the floor at ``s = total_steps``, one
    step after the last. transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` was not taken: its warmup
    starts at 0, so the first optimizer step has learning rate 0.
    """
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

    return get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, min_lr_rate=min_lr_ratio)

