"""The run directory's records are replaced atomically: metrics.csv rewritten under a new header (a column first
logged) and config.yaml; a failed replace leaves the previous file whole."""

import csv
import os
from types import SimpleNamespace

import pytest

from mmpeft.callbacks.run_logger import ContinuingExperimentWriter, RunConfigSaver


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def two_saved_steps(directory):
    writer = ContinuingExperimentWriter(str(directory))
    writer.log_metrics({"train/loss": 1.5}, step=0)
    writer.save()
    writer.log_metrics({"train/loss": 1.25}, step=1)
    writer.save()  # same header: appended
    writer.log_metrics({"lr/projector": 0.001}, step=2)  # a new column: the file is rewritten under a new header
    return writer


def test_a_new_column_rewrites_metrics_csv_under_the_new_header(tmp_path):
    two_saved_steps(tmp_path).save()
    assert rows(tmp_path / "metrics.csv") == [
        {"lr/projector": "", "step": "0", "train/loss": "1.5"},
        {"lr/projector": "", "step": "1", "train/loss": "1.25"},
        {"lr/projector": "0.001", "step": "2", "train/loss": ""}]


def test_a_failed_rewrite_leaves_the_old_metrics_csv_whole(tmp_path, monkeypatch):
    writer = two_saved_steps(tmp_path)
    before = (tmp_path / "metrics.csv").read_bytes()
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        writer.save()
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"], "no temp file left"


class Parser:
    def __init__(self, text):
        self.text = text

    def dump(self, config, skip_none=False):
        return self.text


def trainer(log_dir):
    return SimpleNamespace(log_dir=str(log_dir), is_global_zero=True, loggers=[],
                           strategy=SimpleNamespace(broadcast=lambda x: x))


def test_config_yaml_is_written_atomically_and_an_earlier_different_one_is_kept(tmp_path, monkeypatch):
    RunConfigSaver(Parser("a: 1\n"), config=None).setup(trainer(tmp_path), None, "fit")
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    RunConfigSaver(Parser("a: 1\n"), config=None).setup(trainer(tmp_path), None, "fit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"], "the same config is not kept twice"

    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        RunConfigSaver(Parser("a: 2\n"), config=None).setup(trainer(tmp_path), None, "fit")
    monkeypatch.undo()
    assert (tmp_path / "config.1.yaml").read_text() == "a: 1\n", "the earlier config is kept"
    assert not list(tmp_path.glob("*.tmp"))
    RunConfigSaver(Parser("a: 2\n"), config=None).setup(trainer(tmp_path), None, "fit")
    assert (tmp_path / "config.yaml").read_text() == "a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.1.yaml", "config.yaml"]
