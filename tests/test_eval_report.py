"""``mmpeft report`` on fabricated run directories (no model): partial evaluations and intervals stay visible."""

import json
import os

import pytest

from mmpeft.eval.report import summarize, write_report
from mmpeft.eval.tasks.vqa import score_vqa


def vqa_scores():
    """Real ``score_vqa`` output: 8 questions, 2 question types and 2 answer types, half right."""
    return score_vqa([{"id": f"q{i}", "prediction": "red" if i % 2 else "blue",
                       "eval": {"answers": ["red"] * 10, "question_id": i,
                                "question_type": "what color" if i < 4 else "how many",
                                "answer_type": "other" if i < 4 else "number"}} for i in range(8)])


def probe(kind, metric, delta, interval, base=0.5):
    """A ``text_probes.compare`` result of one probe, as the eval JSON holds it."""
    return {"kind": kind, "adapted": {metric: base + delta}, "base": {metric: base}, "delta": {metric: delta},
            "interval_95": {metric: {"adapted": [0, 1], "base": [0, 1], "delta": interval}}}


def run_dir(root, name, evaluation):
    (root / name / "eval").mkdir(parents=True)
    (root / name / "eval" / "last.json").write_text(json.dumps(evaluation))
    return root / name


@pytest.fixture
def runs(tmp_path):
    partial = {"step": 5, "vqa": vqa_scores(),
               "text_probes": {"facts": probe("multiple_choice", "acc", -0.1, [-0.2, 0.0]),
                               "arith": probe("exact_match", "exact_match", 0.25, [0.05, 0.5]),
                               "prose": probe("perplexity", "perplexity", 2.0, [1.0, 3.0], base=20.0)},
               "missing": {"missing_rows": 3, "skipped": {"too_long": 1}, "lost": {"s.tar": {"truncated_shard": 2}},
                           "damaged": {"t.tar": "corrupt_shard"}, "limit": 8, "allow_partial": True}}
    whole = {"step": 5, "vqa": {k: v for k, v in vqa_scores().items() if k != "interval_95"},  # before intervals
             "missing": {"missing_rows": 0, "skipped": {}, "lost": {}, "damaged": {}, "limit": None}}
    older = {"step": 2, "vqa": {"overall": 40.0, "per_question_type": {"what color": 40.0}}}  # before "missing"
    return [run_dir(tmp_path, "partial", partial), run_dir(tmp_path, "whole", whole),
            run_dir(tmp_path, "older", older)]


def test_report_shows_missing_rows_limits_and_every_interval(runs, tmp_path):
    """The bugs this guards: an --allow-partial or --limit eval looked complete in the report, and the per-type VQA
    and MC/EM change intervals of the eval JSON were dropped."""
    row = summarize(runs[0])
    assert row["missing"] == {"rows": 3, "damaged_shards": 1, "limit": 8, "allow_partial": True}
    assert row["mc_acc_change_interval"] == pytest.approx([-20.0, 0.0])
    assert row["em_change_interval"] == pytest.approx([5.0, 50.0])
    assert row["ppl_change_pct"] == pytest.approx(10.0) and row["ppl_change_pct_interval"] == pytest.approx([5, 15])
    write_report(runs, tmp_path / "report")
    table = (tmp_path / "report" / "report.md").read_text()
    lines = table.splitlines()
    assert lines[0].endswith("| MC acc change (pts) [95%] | EM change (pts) [95%] | missing rows / limit |")
    partial, whole, older = lines[2:5]
    assert partial.startswith("| partial | 5 | 50.00 [21.52, 78.48] |")
    assert partial.endswith("| 10.00 [5.00, 15.00] | -10.00 [-20.00, 0.00] | 25.00 [5.00, 50.00] | 3 + ? (1 "
                            "damaged shard(s) without a manifest count); limit 8 |")
    assert whole.endswith("| 0 |") and older.endswith("| not recorded |")
    qtype = lines.index("VQA accuracy by question type [95%]:")
    assert lines[qtype + 2] == "| run | how many | what color |"
    assert lines[qtype + 4] == "| partial | 50.00 [15.00, 85.00] | 50.00 [15.00, 85.00] |"
    assert lines[qtype + 6] == "| older |  | 40.00 |"
    atype = lines.index("VQA accuracy by answer type [95%]:")
    assert lines[atype + 4] == "| partial | 50.00 [15.00, 85.00] | 50.00 [15.00, 85.00] |"
    assert "| partial | facts | acc (pts) | -10.00 [-20.00, 0.00] |" in lines
    assert "| partial | arith | exact_match (pts) | 25.00 [5.00, 50.00] |" in lines
    assert "| partial | prose | perplexity (% of base) | 10.00 [5.00, 15.00] |" in lines
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["missing"] for r in saved][1:] == [{"rows": 0, "damaged_shards": 0, "limit": None,
                                                  "allow_partial": None}, None]


def test_report_files_are_replaced_atomically(runs, tmp_path, monkeypatch):
    out = tmp_path / "report"
    write_report(runs, out)
    old = (out / "report.md").read_text()
    replace = os.replace

    def dies_on_markdown(src, dst):
        if str(dst) == str(out / "report.md"):
            raise OSError("disk full")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_markdown)
    with pytest.raises(OSError, match="disk full"):
        write_report(runs[:1], out)
    assert (out / "report.md").read_text() == old and not list(out.glob("*.tmp"))


def test_unreadable_eval_file_is_named(tmp_path):
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "last.json").write_text('{"step": 3, "vqa": ')  # a write cut short
    with pytest.raises(ValueError, match=r"run/eval/last.json is not a readable eval JSON"):
        summarize(tmp_path / "run")
