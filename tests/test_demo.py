"""`mmpeft demo --quick`: the whole pipeline end to end on the real embedded towers, a few samples and steps; then
one run's command.txt, run again by hand, gives the demo's weights bit for bit."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmpeft.apps.main import cli_main


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path, monkeypatch, zoo_cache):
    monkeypatch.setenv("MMPEFT_CACHE", str(zoo_cache))
    text = cli_main(["demo", "--quick", "--out", str(tmp_path / "demo")])
    for section in ("## VQA accuracy by question type", "## Captions", "## Text skills: adapted vs base",
                    "## Chat answers", "## Targets", "majority baseline", "constant caption"):
        assert section in text
    assert "95% intervals over test items" in text and "| **mean over types** |" in text
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(report["runs"]) == {"plain", "kl"} and report["seeds"] == 1
    assert report["runs"]["plain"] != report["runs"]["kl"]
    for run in report["runs"].values():
        assert set(run["text_probes"]) == {"ppl_pydoc_heldout", "ppl_prose", "mc_knowledge", "mc_arithmetic",
                                           "instructions", "chat"}
        assert run["vqa"]["num_questions"] > 0 and run["captions"]["tokenizer"] == "ptb" and "CIDEr" in run["captions"]
        assert "overall" in run["vqa"]["interval_95"] and "CIDEr" in run["captions"]["interval_95"]
        assert "interval_95" in run["text_probes"]["ppl_prose"]
    for png in ("vl_vs_forgetting.png", "curves.png"):
        assert (tmp_path / "demo" / png).is_file()
    rerun_by_hand_trains_the_same_weights(tmp_path / "demo" / "plain")


def model_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's model files (trainable weights, adapters), by file and key."""
    return {f"{path.relative_to(checkpoint)}:{key}": tensor for path in sorted(checkpoint.rglob("*.safetensors"))
            if path.name != "lightning.safetensors" for key, tensor in load_file(path).items()}


def rerun_by_hand_trains_the_same_weights(run: Path) -> None:
    """``sh <run>/command.txt``, as a user would type it (``mmpeft`` on the PATH), in a fresh run directory: the
    weights equal the demo's bit for bit, so the demo's scores are those of ``mmpeft fit`` with its configs."""
    command = (run / "command.txt").read_text()
    assert re.search(r"^OMP_NUM_THREADS=\d+ mmpeft fit --config trainer/cpu.yaml .*"
                     r"--config experiments/demo_plain.yaml ", command, re.M), command
    by_demo = run.with_name(run.name + "-by-demo")
    run.rename(by_demo)  # the command names the run directory: it trains into a fresh one
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(["sh", str(by_demo / "command.txt")], env={**os.environ, "PATH": path},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Seed set to") == 1, "each Lightning log line once (it was printed twice)"
    demo_weights = model_tensors(by_demo / "checkpoints" / "last.ckpt")
    hand_weights = model_tensors(run / "checkpoints" / "last.ckpt")
    assert demo_weights.keys() == hand_weights.keys() and len(demo_weights) > 10
    assert [k for k in demo_weights if not torch.equal(demo_weights[k], hand_weights[k])] == []
