"""The FP8 towers' cached weight casts over a fit (``VLMModule(cache_fp8_weights=True)``).

Cached from the start of the fit (before the sanity check: validation within the fit runs the same casts as
training, so compiled layers compile one variant), cast again before a step when a base weight changed since,
dropped when the fit ends or raises (the memory back). Not under FSDP: its weights are shards.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from mmpeft.towers.quantize import cache_fp8_weight_casts, recast_stale_fp8_weights

log = logging.getLogger(__name__)


class CachedFP8Casts(Callback):
    """Keeps every ``FrozenFloat8Linear`` under the module's ``vlm`` cached from fit start to fit end."""

    def __init__(self):
        self.layers: list[nn.Module] = []

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not isinstance(trainer.strategy, FSDPStrategy):
            self.layers = cache_fp8_weight_casts(module.vlm, True)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        recast = recast_stale_fp8_weights(self.layers)  # a base weight changed since its casts were made
        if recast:
            log.info("cast %d changed FP8 base weights again", recast)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        cache_fp8_weight_casts(module.vlm, False)
        self.layers = []

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, module)
