"""The run directory's own records: ``metrics.csv`` that survives resumes, and ``config.yaml`` with its history.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so resuming a run lost every row
logged before the resume. ``RunCSVLogger`` continues the file instead. Rows of steps the resumed run will log again
(steps at or after its first logged step: work done after the checkpoint it resumed from, which that process then
lost) move to ``metrics.superseded.csv``, so ``metrics.csv`` holds one trajectory and nothing is deleted. A fresh
run (step 0) in a used run directory therefore moves all earlier rows there.

``RunConfigSaver`` writes ``config.yaml`` like LightningCLI does, but keeps an earlier, different ``config.yaml``
as ``config.<n>.yaml`` (the resumed run's config differs at least in ``ckpt_path``), and records the resolved config
as the hyperparameters of every tracker in ``trainer.logger`` (``mmpeft.callbacks.trackers.log_config``).

Writes: ``config.yaml``, the merged ``metrics.csv``, ``metrics.superseded.csv`` and every rewrite of ``metrics.csv``
under a new header (a column first logged) replace the file atomically (``mmpeft.atomic``). New rows are appended
by Lightning's writer: an append log, where a crash can cut only the rows being appended, never earlier ones.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mmpeft.atomic import write_text_atomic
from mmpeft.callbacks.trackers import log_config

log = logging.getLogger(__name__)

SUPERSEDED_FILE = "metrics.superseded.csv"


class ContinuingExperimentWriter(ExperimentWriter):
    """An ``ExperimentWriter`` that appends to an existing ``metrics.csv`` (see module docstring)."""

    def __init__(self, log_dir: str) -> None:
        self._previous: list[dict[str, str]] = []
        self._previous_keys: list[str] = []
        path = Path(log_dir) / self.NAME_METRICS_FILE
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self._previous = list(reader)
                self._previous_keys = list(reader.fieldnames or [])
        super().__init__(log_dir)
        self._merged = not self._previous

    def _check_log_dir_exists(self) -> None:
        """The parent deletes an existing metrics.csv here; ours is rewritten atomically on the first save."""

    def save(self) -> None:
        if not self._merged and self.metrics:
            self._merge_previous(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Lightning rewrites the whole file in place when a column is first logged; here, atomically."""
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows_atomic(Path(self.metrics_file_path), rows, fieldnames)

    def _merge_previous(self, first_new_step: int) -> None:
        kept = [r for r in self._previous if not r.get("step") or int(r["step"]) < first_new_step]
        superseded = [r for r in self._previous if r.get("step") and int(r["step"]) >= first_new_step]
        if superseded:
            _append_rows(Path(self.log_dir) / SUPERSEDED_FILE, superseded, self._previous_keys)
            log.info("metrics.csv: %d row(s) of steps >= %d from an earlier process moved to %s (this run logs "
                     "those steps again)", len(superseded), first_new_step, SUPERSEDED_FILE)
        keys = sorted(set(self._previous_keys) | set().union(*self.metrics))
        _write_rows_atomic(Path(self.metrics_file_path), kept, keys)
        self.metrics_keys = keys
        self._merged = True


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<run_dir>/metrics.csv`` and continuing it across resumes."""

    def __init__(self, run_dir: str | Path):
        super().__init__(str(run_dir), name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's config saver, writing ``config.yaml`` atomically (rank zero, in ``trainer.log_dir``) and
    keeping an earlier, different ``config.yaml`` as ``config.<n>.yaml``: nothing is overwritten but the same
    config. ``multifile`` is not supported. The config goes to every tracker as its hyperparameters."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if self.multifile:
            raise ValueError("RunConfigSaver writes one config.yaml: set save_config_kwargs multifile=False")
        log_dir = trainer.log_dir  # a collective: every rank calls it
        if trainer.is_global_zero:
            if log_dir:
                path = Path(log_dir) / self.config_filename
                new = self.parser.dump(self.config, skip_none=False)  # what LightningCLI's saver writes
                if path.is_file() and path.read_text() != new:
                    n = 1
                    while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
                        n += 1
                    path.rename(path.with_name(f"{path.stem}.{n}{path.suffix}"))
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, new)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)  # all ranks agree, as Lightning's

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Record the resolved config as each tracker's hyperparameters (metrics.csv's is config.yaml itself)."""
        trackers = [logger for logger in trainer.loggers if not isinstance(logger, RunCSVLogger)]
        if trackers:
            log_config(trackers, self.config.as_dict())


def _write_rows_atomic(path: Path, rows: list[dict[str, str]], keys: list[str]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _append_rows(path: Path, rows: list[dict[str, str]], keys: list[str]) -> None:
    existing: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            existing = list(reader)
            keys = sorted(set(keys) | set(reader.fieldnames or []))
    _write_rows_atomic(path, existing + rows, keys)
