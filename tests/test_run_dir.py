"""The run directory keeps its records across resumes, and bad options fail before any tower loads."""

import csv
import os
import subprocess
import sys

import pytest
from lightning_helpers import SimulatedKill
from tiny_fit import fit_args

from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_towers


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return save_tiny_towers(tmp_path_factory.mktemp("tiny_run_dir"))


def rows(path):
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def test_resume_continues_metrics_csv_and_keeps_configs(towers, tmp_path):
    run = tmp_path / "run"
    common = ["--trainer.max_steps=8", "--checkpoint_every_n_steps=3"]
    with pytest.raises(SimulatedKill):
        cli_main(fit_args(towers, run, *common, "--trainer.callbacks+=lightning_helpers.KillAtStep",
                          "--trainer.callbacks.step=5"))
    before = {int(r["step"]): r["train/loss"] for r in rows(run / "metrics.csv")}
    assert sorted(before) == list(range(len(before))) and len(before) >= 4  # the kill may lose the last flush
    first_config = (run / "config.yaml").read_text()
    cli_main(fit_args(towers, run, *common, f"--ckpt_path={run / 'checkpoints' / 'step=000003.ckpt'}"))
    after = rows(run / "metrics.csv")
    steps = [int(r["step"]) for r in after]
    assert steps == list(range(8)), "one trajectory: steps 0-2 of the first process, 3-7 of the resumed one"
    assert {int(r["step"]): r["train/loss"] for r in after if int(r["step"]) < 3} == \
        {s: v for s, v in before.items() if s < 3}
    # the first process's steps from 3 on were lost with it and logged again: kept aside, not deleted
    superseded = rows(run / "metrics.superseded.csv")
    assert [int(r["step"]) for r in superseded] == [s for s in sorted(before) if s >= 3]
    assert [r["train/loss"] for r in superseded] == [before[s] for s in sorted(before) if s >= 3]
    assert (run / "config.1.yaml").read_text() == first_config
    assert "ckpt_path" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("option, message", [
    ("--model.lr.llm=-1e-4", r"model.lr.llm=-0.0001: a learning rate must be a finite number >= 0"),
    ("--data.text_ratio=1.0", r"data.text_ratio=1.0: the share of text-only replay rows must be in \[0, 1\)"),
    ("--data.text_ratio=-0.1", r"data.text_ratio=-0.1"),
    ("--data.max_length=100000", r"data.max_length=100000 exceeds what the LLM .* takes \(512 positions"),
    ("--model.min_lr_ratio=2", r"model.min_lr_ratio=2.0: must be in \[0, 1\]"),
    ("--data.batch_size=0", r"data.batch_size=0: must be an integer >= 1"),
])
def test_bad_options_fail_before_the_towers_load(towers, tmp_path, monkeypatch, option, message):
    import functools

    import mmpeft.towers.llm as llm_module

    @functools.wraps(llm_module.LLMTower.__init__)  # keeps the signature jsonargparse reads
    def no_loading(*args, **kwargs):
        raise AssertionError("a tower was built before the options were checked")

    monkeypatch.setattr(llm_module.LLMTower, "__init__", no_loading)
    with pytest.raises(ValueError, match=message):
        cli_main(fit_args(towers, tmp_path / "bad", option))


def test_console_entry_reports_a_bad_option_without_a_traceback(tmp_path):
    args = fit_args(tmp_path / "towers-not-needed", tmp_path / "run", "--model.lr.llm=-1")
    out = subprocess.run([sys.executable, "-c", "from mmpeft.apps.main import main; main()", *args],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    assert "mmpeft: error: model.lr.llm=-1.0: a learning rate must be a finite number >= 0" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_run_stopped_mid_epoch_logs_its_partial_data_counts(towers, tmp_path):
    run = tmp_path / "run"
    cli_main(fit_args(towers, run, "--trainer.max_steps=3"))  # 12 batches per epoch: stops inside epoch 0
    with open(run / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("data/rows")]
    assert len(logged) == 1 and int(logged[0]["step"]) == 3
    assert float(logged[0]["data/rows"]) >= 3 * 8  # at least the three batches trained on (prefetch reads ahead)
    assert logged[0]["data/skipped"] == "0.0" and logged[0]["data/lost"] == "0.0"
