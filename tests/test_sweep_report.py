"""``mmpeft report --sweep`` on a fabricated sweep directory (no training): statistics across seeds checked against
scipy computed here, paired differences, the Pareto front, missing runs, the runs.jsonl round trip, clear errors."""

import json
import math
import shutil

import pytest
from scipy import stats

from mmpeft.apps.main import cli_main
from mmpeft.eval.sweep_collect import collect, flatten_eval, metric_unit
from mmpeft.eval.sweep_report import report_sweep
from mmpeft.eval.sweep_stats import pareto_front, seed_summary

# hand-chosen per-seed values (seeds 0, 1, 2): B is A plus a small, steady gain, while the seeds spread widely
VQA = {"A": [40.0, 50.0, 60.0], "B": [42.0, 53.0, 62.5]}
PPL_CHANGE = {"A": [1.0, 2.0, 3.0], "B": [0.5, 1.0, 1.5]}  # adapted perplexity above the base's, percent
MC_CHANGE = {"A": [0.0, -0.1, -0.2], "B": [0.1, 0.0, -0.1]}  # accuracy, fraction (the report says points)


def vqa(overall):
    """``VQAResult.to_dict()`` plus ``interval_95``, as ``mmpeft eval`` writes it."""
    return {"overall": overall, "per_answer_type": {"other": overall, "number": overall / 2},
            "per_question_type": {"what color": overall + 10, "how many": overall - 10},
            "per_question": {"q1": 100.0, "q2": 0.0}, "num_questions": 2, "digits": None,
            "interval_95": {"overall": [0.0, 100.0], "per_question_type": {}, "per_answer_type": {}}}


def evaluation(config, seed):
    base_ppl = 200.0
    ppl = base_ppl * (1 + PPL_CHANGE[config][seed] / 100)
    mc = 0.5 + MC_CHANGE[config][seed]
    return {"checkpoint": "run/checkpoints/last.ckpt", "step": 6, "vqa": vqa(VQA[config][seed]),
            "captions": {"Bleu_4": 0.1, "METEOR": 0.2, "ROUGE_L": 0.3, "CIDEr": 0.4 + seed / 10,
                         "per_image": {"1": {"CIDEr": 0.4}}, "not_computed": {}, "tokenizer": "ptb",
                         "num_images": 1, "pycocoevalcap": "1.2", "interval_95": {"CIDEr": [0.1, 0.8]},
                         "empty_predictions": 0},
            "text_probes": {
                "ppl": {"kind": "perplexity", "adapted": {"perplexity": ppl, "nll_per_token": math.log(ppl),
                                                          "tokens": 9, "windows": [[9 * math.log(ppl), 9]]},
                        "base": {"perplexity": base_ppl, "nll_per_token": math.log(base_ppl), "tokens": 9,
                                 "windows": [[9 * math.log(base_ppl), 9]]},
                        "delta": {"perplexity": ppl - base_ppl, "nll_per_token": math.log(ppl / base_ppl)},
                        "interval_95": {"perplexity": {"delta": [0.0, 1.0]}}},
                "facts": {"kind": "multiple_choice", "adapted": {"acc": mc, "acc_norm": mc, "n": 10},
                          "base": {"acc": 0.5, "acc_norm": 0.5, "n": 10}, "delta": {"acc": mc - 0.5, "acc_norm": 0}},
            },
            "vision": {"images": 4, "cka": 0.9, "cosine_pooled": 0.95, "cosine_tokens": 0.97,
                       "linear_probe": {"adapted": 0.7, "base": 0.75, "delta": -0.05}},
            "skipped": {}, "missing": {"missing_rows": 0, "skipped": {}, "lost": {}, "damaged": {}, "limit": None}}


METRICS_HEADER = ("step,tokens_per_s,train/loss,perf/peak_memory_gib,probe/ppl/perplexity_delta_pct,"
                  "probe/ppl/perplexity_delta_pct_lo,probe/ppl/perplexity_delta_pct_hi,probe/vqa/overall")


def write_run(run_dir, config, seed, status="done"):
    (run_dir / "eval").mkdir(parents=True)
    record = {"sweep": "lr", "config": config, "seed": seed, "case": "lora", "overrides": {}, "status": status,
              "fit_s": 100.0 + seed, "eval_s": 10.0}
    (run_dir / "sweep_run.json").write_text(json.dumps(record))
    if status != "done":
        return
    (run_dir / "eval" / "last.json").write_text(json.dumps(evaluation(config, seed)))
    (run_dir / "eval" / "last.predictions.jsonl").write_text("")
    (run_dir / "trainability.md").write_text(
        "| component | method | trainable | frozen | % trainable |\n| --- | --- | ---: | ---: | ---: |\n"
        "| llm | lora | 262,144 | 135,616 | 65.905 |\n| **total** | | 280,704 | 199,168 | 58.496 |\n")
    rows = [METRICS_HEADER, f"0,,,,0.0,0.0,0.0,{VQA[config][seed] / 4}"]
    for step, speed in enumerate([10.0, 100.0, 100.0, 100.0, 200.0, 300.0], 1):
        rows.append(f"{step},{speed},1.0,{1.5 + step / 10},,,,")
    rows.append(f"6,,,,{PPL_CHANGE[config][seed]},{PPL_CHANGE[config][seed] - 1},{PPL_CHANGE[config][seed] + 1},"
                f"{VQA[config][seed]}")
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def sweep(tmp_path):
    """A x 4 seeds (seed 3 never started), B x 4 seeds (seed 3 failed, B planned in another seed order: pairs are
    by seed, not by position); baseline A."""
    out = tmp_path / "sweep"
    runs = []
    for config in ("A", "B"):
        for seed in range(4) if config == "A" else (3, 1, 2, 0):
            run_dir = f"{config}/seed{seed}"
            runs.append({"config": config, "seed": seed, "run_dir": run_dir, "case": "lora",
                         "overrides": {"model.lr": 1e-4 if config == "A" else 3e-4}})
            if seed < 3:
                write_run(out / run_dir, config, seed)
            elif config == "B":
                write_run(out / run_dir, config, seed, status="failed")
    (out / "sweep.json").write_text(json.dumps({"name": "lr", "baseline": "A", "runs": runs}))
    return out


def t_interval(values):
    """Independent of the code under test: scipy's t interval around the mean with the standard error."""
    n = len(values)
    mean = sum(values) / n
    return stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(values))


def test_flattened_metrics_of_one_run(sweep):
    rows = collect(sweep)
    metrics = rows[0]["metrics"]
    assert metrics["vqa/overall"] == 40.0 and metrics["vqa/qtype/how many"] == 30.0
    assert metrics["vqa/atype/number"] == 20.0 and metrics["captions/CIDEr"] == pytest.approx(0.4)
    assert "captions/num_images" not in metrics and "captions/images" not in metrics
    assert metrics["text/ppl/perplexity_change_pct"] == pytest.approx(1.0)
    assert metrics["text/facts/acc_change_pts"] == pytest.approx(0.0)
    assert rows[1]["metrics"]["text/facts/acc_change_pts"] == pytest.approx(-10.0)
    assert metrics["forgetting/ppl_change_pct"] == pytest.approx(1.0)
    assert metrics["vision/cka"] == 0.9 and metrics["vision/linear_probe_delta"] == -0.05
    assert metrics["perf/trainable_params"] == 280704
    assert metrics["perf/tokens_per_s"] == pytest.approx(200.0), "mean after the first 3 logged values"
    assert metrics["perf/peak_memory_gib"] == pytest.approx(2.1)
    assert metrics["time/fit_s"] == 100.0 and metrics["time/eval_s"] == 10.0
    assert rows[0]["curves"]["probe/vqa/overall"] == [[0, 10.0], [6, 40.0]]
    assert [(r["config"], r["seed"], r["counted"]) for r in rows if not r["counted"]] == [("A", 3, False),
                                                                                          ("B", 3, False)]


def test_means_intervals_paired_differences_front_and_missing(sweep):
    report = report_sweep(sweep)["report"]
    for config in ("A", "B"):
        summary = report["configs"][config]["metrics"]["vqa/overall"]
        assert summary["n"] == 3 and summary["mean"] == pytest.approx(sum(VQA[config]) / 3)
        assert summary["std"] == pytest.approx(stats.tstd(VQA[config]))
        assert summary["interval"] == pytest.approx(list(t_interval(VQA[config])))
    # paired by seed: B - A = [2, 3, 2.5]; the seeds' own spread (sd 10) cancels
    paired = report["configs"]["B"]["paired"]["vqa/overall"]
    assert paired["seeds"] == [0, 1, 2] and paired["mean"] == pytest.approx(2.5)
    assert paired["interval"] == pytest.approx(list(t_interval([2.0, 3.0, 2.5])))
    unpaired = report["configs"]["B"]["metrics"]["vqa/overall"]["half_width"]
    assert paired["half_width"] < unpaired / 5 and paired["interval"][0] > 0
    assert report["configs"]["B"]["paired"]["text/facts/acc_change_pts"]["mean"] == pytest.approx(10.0)
    assert report["configs"]["A"]["paired"] is None, "no difference of the baseline against itself"
    # B: more VQA and less forgetting than A on average: A is dominated
    assert report["pareto"]["front"] == ["B"]
    assert report["configs"]["A"]["missing"] == [{"seed": 3, "run_dir": "A/seed3", "status": "not started",
                                                  "reason": "no A/seed3/sweep_run.json: the run was not started"}]
    assert report["configs"]["B"]["missing"][0]["status"] == "failed"
    assert [report["configs"][c]["n_done"] for c in "AB"] == [3, 3]
    curve = report["curves"]["A"]["vl"]
    assert [p["step"] for p in curve] == [0, 6] and curve[1]["interval"] == pytest.approx(
        list(t_interval(VQA["A"])))
    md = (sweep / "report" / "sweep_report.md").read_text()
    assert "| A | lora | `model.lr=0.0001` | 3 of 4 (0, 1, 2) | seed 3: no A/seed3/sweep_run.json" in md
    assert "seed 3: status 'failed' in B/seed3/sweep_run.json" in md
    assert "| B | 3 | **2.5 ± 1.2** |" in md, ("paired VQA difference, rounded to the half-width's 2nd digit, in "
                                             "bold: its interval excludes zero")
    paired_time = md.split("### time (paired)")[1].split("###")[0]
    assert "| B | 3 | 0 ± 0 | 0 ± 0 |" in paired_time, "equal fit and eval times: a zero difference, not in bold"
    assert "not dominated" in md and ": `B`" in md and "`vqa/overall`" in md and "`forgetting/ppl_change_pct`" in md
    for png in ("vl_vs_forgetting.png", "curves.png"):
        assert (sweep / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_jsonl_alone_regenerates_the_same_report(sweep, tmp_path):
    cli_main(["report", "--sweep", str(sweep)])  # default out: SWEEP_DIR/report
    first = json.loads((sweep / "report" / "sweep_report.json").read_text())
    lines = (sweep / "report" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 8 and sum(json.loads(line)["counted"] for line in lines) == 6
    moved = tmp_path / "elsewhere" / "runs.jsonl"
    moved.parent.mkdir()
    shutil.copy(sweep / "report" / "runs.jsonl", moved)
    shutil.rmtree(sweep)  # nothing of the sweep left but the JSONL
    result = cli_main(["report", "--from-jsonl", str(moved)])
    assert json.loads((moved.parent / "sweep_report.json").read_text()) == first
    assert {p.name for p in result["files"]} == {"sweep_report.json", "sweep_report.md", "vl_vs_forgetting.png",
                                                  "curves.png"}
    assert moved.read_text().splitlines() == lines


def test_baseline_option_and_metric_choice(sweep, tmp_path):
    report = report_sweep(sweep, out=tmp_path / "r", baseline="B", vl_metric="captions/CIDEr",
                          forgetting_metric="text/ppl/perplexity_change_pct")["report"]
    assert report["configs"]["A"]["paired"]["vqa/overall"]["mean"] == pytest.approx(-2.5)
    assert report["vl_metric"]["name"] == "captions/CIDEr"
    assert report["pareto"]["points"]["A"] == pytest.approx([0.5, 2.0])


def test_one_seed_has_no_interval_and_says_so(sweep, tmp_path):
    plan = json.loads((sweep / "sweep.json").read_text())
    plan["runs"] = [r for r in plan["runs"] if r["config"] == "A" or r["seed"] == 0]
    (sweep / "sweep.json").write_text(json.dumps(plan))
    report = report_sweep(sweep)["report"]
    single = report["configs"]["B"]["metrics"]["vqa/overall"]
    assert single["interval"] is None and single["half_width"] is None and "one seed" in single["note"]
    assert report["configs"]["B"]["paired"]["vqa/overall"]["interval"] is None
    assert "| B | 1 | 42 (1 seed) |" in (sweep / "report" / "sweep_report.md").read_text()


def test_done_run_without_eval_json_is_missing_unless_the_sweep_has_no_eval(sweep):
    (sweep / "A" / "seed0" / "eval" / "last.json").unlink()
    report = report_sweep(sweep)["report"]
    assert report["configs"]["A"]["n_done"] == 2
    assert report["configs"]["A"]["missing"][0]["reason"] == "status 'done' but no eval JSON in A/seed0/eval"
    record = json.loads((sweep / "A" / "seed0" / "sweep_run.json").read_text())
    (sweep / "A" / "seed0" / "sweep_run.json").write_text(json.dumps({**record, "eval_args": None}))
    row = collect(sweep)[0]
    assert row["counted"] and "vqa/overall" not in row["metrics"] and row["metrics"]["time/fit_s"] == 100.0
    assert report_sweep(sweep)["report"]["configs"]["A"]["metrics"]["vqa/overall"]["n"] == 2


def test_seed_summary_and_pareto_front_by_hand():
    s = seed_summary([1.0, 2.0, 6.0])
    assert s["mean"] == 3.0 and s["interval"] == pytest.approx(list(t_interval([1.0, 2.0, 6.0])))
    points = {"best_vl": (80.0, 5.0), "least_forgetting": (60.0, 0.5), "dominated": (59.0, 6.0),
              "middle": (70.0, 2.0), "tie_worse": (70.0, 2.5)}
    assert pareto_front(points) == ["least_forgetting", "middle", "best_vl"]


def test_errors_name_the_file_or_option(sweep, tmp_path):
    with pytest.raises(ValueError, match=r"sweep\.json not found: .* is not a sweep directory"):
        report_sweep(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"--baseline 'C' is not a config of this sweep; its configs: \['A', 'B'\]"):
        report_sweep(sweep, baseline="C")
    with pytest.raises(ValueError, match=r"--vl-metric 'vqa/nope': no counted run .* available: \["):
        report_sweep(sweep, vl_metric="vqa/nope")
    (sweep / "B" / "seed1" / "eval" / "last.json").write_text('{"step": 6, "vqa": ')  # a write cut short
    with pytest.raises(ValueError, match=r"B/seed1/eval/last.json is not a readable eval JSON"):
        report_sweep(sweep)
    (sweep / "sweep.json").write_text(json.dumps({"name": "x", "runs": [{"config": "A", "seed": 0}]}))
    with pytest.raises(ValueError, match=r"sweep\.json: runs\[0\] has no run_dir"):
        report_sweep(sweep)
    with pytest.raises(SystemExit):
        cli_main(["report", "--sweep", str(sweep), "some_run_dir"])


def test_flatten_keeps_other_tasks_numbers():
    flat = flatten_eval({"step": 3, "pope": {"accuracy": 0.8, "num_questions": 9, "parsing": {"yes": 3}},
                         "text_probes": {}})
    assert flat == {"pope/accuracy": 0.8}


def test_flatten_keeps_generation_probes_drift():
    """A generation probe (chat, instructions) records how far the adapted model's replies moved from the base's
    (ROUGE-L to the base's replies) and their length; the methods study reads both from runs.jsonl."""
    chat = {"kind": "chat_style", "base": {"mean_chars": 112.875, "n": 8, "outputs": []},
            "adapted": {"mean_chars": 25.75, "n": 8, "outputs": [], "rougeL_to_base": 0.1874},
            "delta": {"mean_chars": -87.125}}
    flat = flatten_eval({"text_probes": {"chat": chat}})
    assert flat == {"text/chat/rougeL_to_base": 0.1874, "text/chat/mean_chars": 25.75,
                    "text/chat/mean_chars_change": -87.125}
    assert metric_unit("text/chat/mean_chars") == "characters"
    assert metric_unit("text/chat/mean_chars_change") == "characters"
