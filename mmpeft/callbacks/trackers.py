"""Experiment trackers next to the run directory: where they write, whether they are installed, what they record.

``trainer.logger`` entries are Lightning's own loggers (``logger/wandb.yaml``, ``logger/mlflow.yaml``,
``logger/tensorboard.yaml`` presets). Before they are built, ``place_in_run_dir`` fills what a preset cannot know,
the run directory, into the options the user left at Lightning's defaults:

- ``WandbLogger``: ``save_dir`` (files in ``<run_dir>/wandb/``; ``WANDB_MODE=offline`` runs need no account or
  network) and ``name`` (the run directory's name).
- ``MLFlowLogger``: unless ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``) names a store, a SQLite store inside the run
  directory, ``sqlite:///<run_dir>/mlflow.db``, with artifacts in ``<run_dir>/mlartifacts`` (MLflow >= 3.7 refuses
  its old ``./mlruns`` file store); ``run_name`` (the run directory's name).
- ``TensorBoardLogger`` with ``save_dir: .``: event files in the run directory itself, as the default logger.

The resolved config is recorded to each tracker as its hyperparameters (``log_config``); the run directory's
``metrics.csv`` logger gets none (``config.yaml`` is its record).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

LIGHTNING_LOGGERS = "lightning.pytorch.loggers."
# Lightning logger class name -> (module it imports, the pinned install requirement in requirements-trackers.txt)
TRACKER_PACKAGES = {
    "WandbLogger": ("wandb", "wandb==0.31.0"),
    "MLFlowLogger": ("mlflow", "mlflow-skinny==3.18.0 sqlalchemy==2.1.9 alembic==1.20.1"),
}
MLFLOW_DEFAULT_SAVE_DIR = "./mlruns"  # MLFlowLogger's default: an unset save_dir


def logger_entries(loggers: Any) -> list[Namespace]:
    """The ``class_path``/``init_args`` entries of a parsed ``trainer.logger`` (a bool, None, one entry or a list)."""
    entries = loggers if isinstance(loggers, list) else [loggers]
    return [entry for entry in entries if isinstance(entry, Namespace) and entry.get("class_path")]


def class_name(entry: Namespace) -> str:
    return str(entry.class_path).rsplit(".", 1)[-1]


def check_trackers_installed(loggers: Any) -> None:
    """Raise ValueError naming the pip command for a configured tracker whose package is not installed (wandb and
    mlflow are optional: imported only when a logger needs them)."""
    for entry in logger_entries(loggers):
        module, requirement = TRACKER_PACKAGES.get(class_name(entry), (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f"trainer.logger: {entry.class_path} needs the {module!r} package, which is not "
                             f"installed. Install it with: pip install {requirement} (or pip install -r "
                             "requirements-trackers.txt)")


def place_in_run_dir(loggers: Any, run_dir: Path) -> None:
    """Fill the run directory into the ``init_args`` of ``trainer.logger`` entries left at Lightning's defaults
    (see the module docstring), in place. Options the user set are kept."""
    run_dir = Path(run_dir).resolve()
    for entry in logger_entries(loggers):
        args = entry.get("init_args")
        if args is None:
            args = entry["init_args"] = Namespace()
        name = class_name(entry)
        if name == "WandbLogger":
            if args.get("save_dir") in (None, ".", "") and not args.get("dir"):
                args["save_dir"] = str(run_dir)
            if not args.get("name"):
                args["name"] = run_dir.name
        elif name == "MLFlowLogger":
            if not args.get("tracking_uri") and args.get("save_dir") in (None, MLFLOW_DEFAULT_SAVE_DIR):
                args["tracking_uri"] = f"sqlite:///{run_dir / 'mlflow.db'}"
                if not args.get("artifact_location"):
                    args["artifact_location"] = str(run_dir / "mlartifacts")
            if not args.get("run_name"):
                args["run_name"] = run_dir.name
        elif name == "TensorBoardLogger" and args.get("save_dir") in (None, "."):
            args["save_dir"] = str(run_dir)
            if args.get("name") in (None, "lightning_logs"):
                args["name"] = ""
            if args.get("version") is None:
                args["version"] = ""


def log_config(loggers: list[Any], config: dict[str, Any]) -> None:
    """Record ``config`` (the run's resolved config, nested) as each logger's hyperparameters (rank zero: Lightning's
    loggers log there only). Trackers that flatten it name a value by its path: ``trainer/max_steps``."""
    for logger in loggers:
        logger.log_hyperparams(config)
