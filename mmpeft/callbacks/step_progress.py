"""Training progress counted in optimizer steps: a tqdm bar on a terminal, plain lines in a log.

mmpeft trains for ``trainer.max_steps`` with ``max_epochs=-1``, so Lightning's own bar, counting batches per epoch,
showed an epoch number and no end. ``step_progress`` picks, for the stream Lightning's bar writes to (stdout):

- a terminal: ``StepProgressBar``, Lightning's tqdm bar over the run's optimizer steps: ``train 120/5000``, it/s,
  elapsed and remaining time, and the progress-bar metrics (``train/loss``, ``tokens_per_s``);
- anything else (CI, SLURM, ``nohup``, a pipe): ``StepProgressLog``, one line every N optimizer steps, and none of
  tqdm's carriage returns::

      step 120/5000 (2.4%) | train/loss=2.314 tokens_per_s=8123 | lr projector=1.0e-03 llm=2.0e-04 |
      elapsed 0:01:02 | ETA 0:42:11   (one line)
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with one training bar for the whole run, over optimizer steps (``trainer.global_step``
    of ``trainer.max_steps``), continuing across epochs and from a resumed step."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(trainer.max_steps if trainer.max_steps > 0 else None))
        bar.initial = bar.n = trainer.global_step  # a resumed run starts where its checkpoint left off
        bar.set_description("train")

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """The bar counts the run, not the epoch: nothing to reset."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step, bar = trainer.global_step, self.train_progress_bar
        if bar is not None and step != bar.n and self._should_update(step, bar.total):
            bar.n = step  # accumulate_grad_batches: several batches make one step
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, module))

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, module))

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)  # the run directory's logger has no version
        return metrics


class StepProgressLog(ProgressBar):
    """One progress line every ``every_n_steps`` optimizer steps (and at the last), on rank zero, to ``stream``.

    A line holds step/max_steps, the progress-bar metrics (``train/loss``, ``tokens_per_s``), each parameter
    group's learning rate, the elapsed time and the ETA (this process's mean step time times the steps left).
    ``every_n_steps=None``: every ``trainer.log_every_n_steps``. Validation prints one line of its metrics.
    """

    def __init__(self, every_n_steps: int | None = None, stream: TextIO | None = None):
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"progress_every={every_n_steps}: print a progress line every N >= 1 optimizer steps")
        self.every_n_steps = every_n_steps
        self.stream = stream
        self._enabled = True
        self._start_time = time.perf_counter()
        self._start_step = 0
        self._printed_step = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, file=self.stream or sys.stdout, flush=True, **kwargs)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start_time, self._start_step = time.perf_counter(), trainer.global_step
        self._printed_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self.every_n_steps or max(trainer.log_every_n_steps, 1)
        if step != self._printed_step and (step % every == 0 or step == trainer.max_steps):
            self._printed_step = step
            if self._enabled and trainer.is_global_zero:
                self.print(self.progress_line(trainer, module))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero and not trainer.sanity_checking:
            values = {k: v for k, v in self.get_metrics(trainer, module).items() if k.startswith(("val", "test"))}
            self.print(f"validation at step {trainer.global_step} | {_format_metrics(values)}")

    def progress_line(self, trainer: L.Trainer, module: L.LightningModule) -> str:
        step, max_steps = trainer.global_step, trainer.max_steps if trainer.max_steps > 0 else None
        elapsed = time.perf_counter() - self._start_time
        done = step - self._start_step
        parts = [f"step {step}/{max_steps}" + (f" ({100 * step / max_steps:.1f}%)" if max_steps else "")]
        metrics = {k: v for k, v in self.get_metrics(trainer, module).items() if k != "v_num"}
        if metrics:
            parts.append(_format_metrics(metrics))
        rates = [(group.get("name", str(i)), group["lr"])
                 for optimizer in trainer.optimizers for i, group in enumerate(optimizer.param_groups)]
        if rates:
            parts.append("lr " + " ".join(f"{name}={lr:.1e}" for name, lr in rates))
        eta = elapsed / done * (max_steps - step) if done > 0 and max_steps else None
        parts.append(f"elapsed {_duration(elapsed)} | ETA {'?' if eta is None else _duration(eta)}")
        return " | ".join(parts)


def step_progress(every_n_steps: int | None = None, stream: TextIO | None = None) -> ProgressBar:
    """``StepProgressBar`` when ``stream`` (default stdout, where Lightning's bar writes) is a terminal, else
    ``StepProgressLog(every_n_steps)``."""
    stream = stream or sys.stdout
    if _is_tty(stream):
        return StepProgressBar()
    return StepProgressLog(every_n_steps, stream=None if stream is sys.stdout else stream)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))
