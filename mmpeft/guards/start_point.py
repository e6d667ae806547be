"""A guard's starting point across a resume: the weights a run started from, restored by parameter name.

Guards that measure how far weights moved (L2-SP, EWC on fully trained weights) copy them at ``setup``. On a resume
``setup`` runs on the resumed weights, so the copy saved with the checkpoint (``Guard.state_dict``) replaces it.
Names, never object ids, key it: a resumed process builds new objects.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def restore_start(guard: str, start: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The starting point to use after a resume: ``state`` (the checkpoint's copy) on ``start``'s devices.

    Args:
        guard: the guard's name, for messages.
        start: what ``setup`` copied (the resume point), by parameter name.
        state: what the checkpoint holds. Empty (a guard the checkpointed run did not have): ``start`` is kept,
            with a warning.

    Raises:
        ValueError: the names differ (another model or adapter spec, or a checkpoint that keyed them otherwise).
    """
    if not state and start:
        log.warning("%s: the checkpoint holds no starting point for this guard; it measures from the resume point",
                    guard)
        return start
    if set(state) != set(start):
        missing, unexpected = sorted(set(start) - set(state)), sorted(set(state) - set(start))
        raise ValueError(f"{guard}: the checkpoint's starting point does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}). Resume with the same model.vlm adapter specs and guard "
                         "options; a checkpoint that keyed it by object id (mmpeft before parameter names) cannot "
                         "give it back: start a new run")
    return {k: v.to(start[k].device) for k, v in state.items()}
