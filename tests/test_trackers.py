"""Each tracker of trainer.logger writes where the run directory says, and the run directory keeps config.yaml,
metrics.csv and trainability.md whatever the logger; progress is counted in optimizer steps."""

import csv
import re

import pytest
import yaml
from tiny_fit import fit_args

from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_towers
from mmpeft.callbacks import step_progress


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return save_tiny_towers(tmp_path_factory.mktemp("tiny_trackers"))


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_wandb_offline_and_mlflow_local_write_the_run_dir_with_metrics_and_hyperparameters(
        towers, tmp_path, monkeypatch, capsys):
    import mlflow
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    args = [a for a in fit_args(towers, run) if a != "--trainer.enable_progress_bar=false"]
    cli_main(args + ["--config", "logger/wandb.yaml", "--config", "logger/mlflow.yaml",
                     "--trainer.max_steps=4", "--progress_every=2"])
    wandb.finish()  # what the process's exit does: the offline run writes its files
    assert {"config.yaml", "metrics.csv", "trainability.md", "wandb", "mlflow.db"} <= {p.name for p in run.iterdir()}
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 4
    rows = metric_rows(run)
    lr_columns = [k for k in rows[0] if k.startswith("lr")]
    assert lr_columns and all(any(r[c] for r in rows) for c in lr_columns)

    # wandb offline: one offline run under <run_dir>/wandb holding the config and the logged losses
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    # wandb 0.31 has no Python reader for its record log: the records hold the config as JSON and metric names
    records = next(offline[0].glob("run-*.wandb")).read_bytes()
    assert b'"max_steps":4' in records and b"train/loss" in records and b"lr/" in records

    # mlflow: the SQLite store in the run dir, read back through MLflow's API
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mmpeft")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "run"
    assert mlrun.data.params["trainer/max_steps"] == "4"
    # the nested config, keys joined by /
    assert mlrun.data.params["model/vlm/class_path"] == "mmpeft.vlm.VisionLanguageModel"
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert len(history) == 4
    assert any(k.startswith("lr") for k in mlrun.data.metrics)

    # captured stdout is no terminal: a progress line at steps 2 and 4, with the step count and an ETA
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert all(re.search(r"ETA \d+:\d\d:\d\d", line) and "train/loss=" in line for line in lines)


def test_logger_false_keeps_the_run_dir_and_a_terminal_bar_counts_steps(towers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(step_progress, "_is_tty", lambda stream: True)
    run = tmp_path / "run"
    args = [a for a in fit_args(towers, run) if a != "--trainer.enable_progress_bar=false"]
    cli_main(args + ["--trainer.logger=false", "--trainer.max_steps=3"])
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "trainability.md"} <= names
    assert not any(n.startswith("events.out.tfevents") for n in names)
    rows = metric_rows(run)
    assert any(r.get("train/loss") for r in rows) and any(k.startswith("lr") for k in rows[0])
    captured = capsys.readouterr()
    bar = captured.out + captured.err
    assert "train" in bar and "3/3" in bar
    assert not re.search(r"Epoch \d+/-", bar)
