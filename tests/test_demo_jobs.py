"""The demo's background jobs: progress files and the scheduler's failure path (the happy path runs in
tests/test_demo.py)."""

import json
from types import SimpleNamespace

import pytest

from mmpeft.apps.demo import Job, read_command, run_jobs
from mmpeft.callbacks.progress import ProgressFile, read_progress


def test_progress_file_is_replaced_whole_and_extrapolates_eta(tmp_path):
    path = tmp_path / "run" / "progress.json"
    assert read_progress(path) is None
    callback = ProgressFile(str(path))
    trainer = SimpleNamespace(global_step=0, max_steps=10, is_global_zero=True)
    callback.on_train_start(trainer, None)
    assert read_progress(path) == {"step": 0, "max_steps": 10, "loss": None, "elapsed_s": 0.0, "eta_s": None}
    trainer.global_step = 4
    callback.on_train_batch_end(trainer, None, {"loss": 0.25}, None, 3)
    progress = json.loads(path.read_text())
    assert progress["step"] == 4 and progress["loss"] == 0.25
    assert progress["eta_s"] == pytest.approx(progress["elapsed_s"] * 6 / 4, abs=0.2)
    assert [p.name for p in path.parent.iterdir()] == ["progress.json"]  # no temporary file left behind


def test_failing_job_stops_the_demo_with_its_log(tmp_path):
    jobs = [Job("broken", "train", {"args": ["fit", "--no_such_option=1"]}, tmp_path / "broken" / "train.log"),
            Job("broken", "eval", {}, tmp_path / "broken" / "eval.log", after=("broken/train",))]
    with pytest.raises(SystemExit, match=r"(?s)broken train failed \(exit code \d+\); last lines of .*train\.log.*"
                                         r"no_such_option"):
        run_jobs(jobs, parallel=2, cpus=2)
    assert not (tmp_path / "broken" / "eval.log").exists()  # the job after it never started
    assert read_command(tmp_path / "broken" / "command.txt") == ["fit", "--no_such_option=1"]  # what it ran
