"""Training mode at fit start, and Lightning's warning about modules left in eval mode.

Towers are built in eval mode (frozen); adapter dropout and activation checkpointing only act in training mode,
so ``VLMModule`` switches the model to training mode when a fit starts. Lightning warns about every module still
in eval mode before ``on_train_start``; what stays in eval mode on purpose is the frozen BatchNorm of the base
(``VisionTower.train``). For exactly that case the warning, with exactly that module count, is filtered until
training starts and a log line says why; anything else in eval mode keeps Lightning's warning. (A fit that fails
between the two hooks leaves the count-specific filter in place.) Pure torch and ``warnings``: the caller (the
training layer's ``VLMModule``) says whether it is the logging rank.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


def train_before_lightning_checks(root: nn.Module, model: nn.Module, log_here: bool = True) -> Any | None:
    """``model.train()``, then, when only BatchNorm layers (and what they hold) of ``root`` stay in eval mode, a
    filter for Lightning's eval-mode warning; returns that filter (``warnings.filters`` entry) or None.
    ``log_here``: this process logs why (rank zero only, under data parallelism)."""
    model.train()
    norms = [m for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training]
    in_norms = {id(sub) for norm in norms for sub in norm.modules()}  # timm's BatchNormAct2d holds its act
    still_eval = [m for m in root.modules() if not m.training]
    if not still_eval or not all(id(m) in in_norms for m in still_eval):
        return None
    warnings.filterwarnings("ignore", message=rf"Found {len(still_eval)} module\(s\) in eval mode at the start of "
                            "training", category=UserWarning)  # Lightning's PossibleUserWarning is one
    if log_here:
        log.info("%d frozen BatchNorm layers stay in eval mode (their running statistics belong to the base)",
                 len(norms))
    return warnings.filters[0]


def drop_warning_filter(added: Any | None) -> None:
    """Remove a filter ``train_before_lightning_checks`` added: the process's later fits warn again."""
    if added is not None and added in warnings.filters:
        warnings.filters.remove(added)
        getattr(warnings, "_filters_mutated", lambda: None)()  # CPython: invalidate cached warning decisions
