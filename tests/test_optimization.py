"""The warmup + cosine schedule is transformers' and gives, per step and per parameter group, the values its code
defines; a scheduler restored from its state dict continues with the same values."""

import math

import pytest
import torch

from mmpeft.optimization import warmup_cosine_schedule


def transformers_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """The factor read from transformers 5.24.0 ``_get_cosine_with_min_lr_schedule_with_warmup_lr_rate_lambda``
    (``warmup_lr_rate=None``, ``num_cycles=0.5``): warmup counts the current step, the decay is shifted by one step
    so that the floor is reached at ``step == total - 1``; nothing clamps the progress."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup + 1) / max(1, total - warmup)
    return max(0.0, floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_with_groups(peaks=(1e-3, 2e-4)) -> torch.optim.AdamW:
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr, "name": f"g{i}"}
                              for i, lr in enumerate(peaks)])


def lrs_per_step(schedule, optimizer, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    return seen


@pytest.mark.parametrize("warmup,total,floor", [(0, 10, 0.1), (3, 10, 0.0), (4, 12, 0.25), (5, 5, 0.5),
                                                (2, 3, 1.0), (1, 1, 0.1)])
def test_every_group_follows_the_transformers_formula(warmup, total, floor):
    peaks = (1e-3, 2e-4)
    optimizer = optimizer_with_groups(peaks)
    schedule = warmup_cosine_schedule(optimizer, warmup, total, floor)
    seen = lrs_per_step(schedule, optimizer, total)
    for step, lrs in enumerate(seen):
        expected = [peak * transformers_factor(step, warmup, total, floor) for peak in peaks]
        assert lrs == pytest.approx(expected, rel=1e-12, abs=0), f"step {step}"


def test_warmup_starts_above_zero_and_the_floor_is_reached_at_the_last_step():
    optimizer = optimizer_with_groups((1.0,))
    seen = [lrs[0] for lrs in lrs_per_step(warmup_cosine_schedule(optimizer, 4, 20, 0.1), optimizer, 20)]
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]), "the first step already trains"
    assert seen[-1] == pytest.approx(0.1) and min(seen) == pytest.approx(0.1)
    assert all(a > b for a, b in zip(seen[3:], seen[4:])), "strictly decreasing after the peak"


def test_a_restored_scheduler_continues_with_the_same_values():
    total, stop = 12, 5
    optimizer = optimizer_with_groups()
    uninterrupted = lrs_per_step(warmup_cosine_schedule(optimizer, 3, total, 0.1), optimizer, total)

    optimizer = optimizer_with_groups()
    schedule = warmup_cosine_schedule(optimizer, 3, total, 0.1)
    lrs_per_step(schedule, optimizer, stop)
    state = schedule.state_dict()
    assert state["last_epoch"] == stop

    # Lightning's order on resume: configure_optimizers builds both, then the optimizer's state (its groups' current
    # rates) and the scheduler's (the step count) are loaded
    resumed_optimizer = optimizer_with_groups()
    resumed = warmup_cosine_schedule(resumed_optimizer, 3, total, 0.1)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    assert lrs_per_step(resumed, resumed_optimizer, total - stop) == uninterrupted[stop:]
