"""``DataAccounting``: the training loop's side of the data loaders' bookkeeping (``mmpeft.data.loader.VLLoader``).

A loader counts what each pass delivered, skipped and lost, and keeps the data position that checkpoints store
(it is a Lightning-stateful loader). This callback tells it what was trained on and logs its counts:

- after each training batch: ``mark_consumed(batch["epoch"], batch["index"])``. Batches are prefetched, so what the
  loader yielded runs ahead of what was trained; a checkpoint needs the latter. Lightning runs every ``Checkpoint``
  callback after the others (``_reorder_callbacks``), so a ``ModelCheckpoint`` writing at this step stores this
  position and a run killed later resumes at the next batch;
- at the end of a training epoch read to its end: ``data/<key>`` (``EpochStats.metrics``), summed over ranks;
- at the end of training, usually mid-epoch (``max_steps``): ``data/<key>`` of that partial pass at the final step
  (global rank 0's share; Lightning allows no ``log`` there) and its report in the log;
- at the end of a validation / test pass: ``val/data/<key>`` / ``test/data/<key>``, summed over ranks
  (``finish_eval_pass`` judges a pass cut short: ``PartialData`` unless partial sets are allowed).

``VLMModule.configure_callbacks`` returns one, so every Trainer that runs a ``VLMModule`` has it, built by the CLI
or not. Loaders without these methods (a plain ``DataLoader``) are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class DataAccounting(Callback):
    """Marks trained batches in the training loader and logs every loader's ``data/*`` counts (module docstring)."""

    def __init__(self) -> None:
        self._epoch_logged: int | None = None  # the training epoch whose data/* were logged (logged once)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if isinstance(batch, dict) and "epoch" in batch and hasattr(loader, "mark_consumed"):
            loader.mark_consumed(int(batch["epoch"]), int(batch["index"]))

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Only for a pass read to its end: an epoch stopped by ``max_steps`` has no new entry in ``history``."""
        history = getattr(trainer.train_dataloader, "history", None)
        if not history or history[-1].epoch == self._epoch_logged:
            return
        self._epoch_logged = history[-1].epoch
        for key, value in history[-1].metrics().items():
            # counts add up over ranks; a source's share (data/share/<name>) is averaged (ranks draw alike)
            module.log(f"data/{key}", float(value), reduce_fx="mean" if key.startswith("share/") else "sum",
                       sync_dist=trainer.world_size > 1)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        stats = loader.partial_stats() if hasattr(loader, "partial_stats") else None
        if stats is None or not trainer.is_global_zero:
            return
        metrics = {f"data/{k}": float(v) for k, v in stats.metrics().items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        log.info("%s (partial: training stopped at max_steps)", loader.report(stats))

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._log_eval_data(trainer, module, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._log_eval_data(trainer, module, "test", trainer.test_dataloaders)

    @staticmethod
    def _log_eval_data(trainer: L.Trainer, module: L.LightningModule, stage: str, loaders: Any) -> None:
        """``<stage>/data/*``: the pass's ``EpochStats.metrics``, summed over ranks (a partial pass gets here only
        with ``data.allow_partial_eval``; else its loader raised ``PartialData``)."""
        for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
            for key, value in (loader.finish_eval_pass() if hasattr(loader, "finish_eval_pass") else {}).items():
                module.log(f"{stage}/data/{key}", float(value), reduce_fx="sum", sync_dist=trainer.world_size > 1)
