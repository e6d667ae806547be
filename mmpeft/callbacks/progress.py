"""``ProgressFile``: a run's progress as a small JSON file, for whoever watches a run that has no terminal.

``mmpeft demo`` trains two runs at once in background processes and prints one status line from their files; a
user can ``watch cat runs/x/progress.json`` the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from mmpeft.atomic import write_json_atomic


class ProgressFile(Callback):
    """After every optimizer step, ``path`` holds ``{"step", "max_steps", "loss", "elapsed_s", "eta_s"}``.

    Written atomically (``mmpeft.atomic``: a temporary file, fsynced, then renamed): a reader never sees half a
    file. ``eta_s`` is extrapolated from the mean step time so far (``None`` before the first step or without
    ``max_steps``).
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._write(trainer, None)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self._write(trainer, None if loss is None else float(loss))

    def _write(self, trainer: L.Trainer, loss: float | None) -> None:
        if not trainer.is_global_zero:
            return
        step, max_steps = trainer.global_step, trainer.max_steps if trainer.max_steps > 0 else None
        elapsed = time.perf_counter() - self._start
        eta = elapsed / step * (max_steps - step) if step and max_steps else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"step": step, "max_steps": max_steps, "loss": loss,
                                      "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1)})


def read_progress(path: str | Path) -> dict | None:
    """The last progress written to ``path``, or None when there is none yet."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
