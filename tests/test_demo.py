"""`mmpeft demo --quick`: the whole pipeline end to end on the real embedded towers, a few samples and steps."""

import json

import pytest

from mmpeft.cli import cli_main


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
