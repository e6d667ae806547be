"""``mmpeft report RUN_DIR...``: one table and two plots across runs.

From each run directory: its latest ``eval/*.json`` (``mmpeft eval``) and the probe curves in ``metrics.csv``
(``ForgettingProbes`` callback). Writes ``report.json``, ``report.md``, ``vl_vs_forgetting.png`` (VL score against
text forgetting, one point per run) and ``curves.png`` (forgetting and VL score over training steps).

``mmpeft report --sweep SWEEP_DIR`` (or ``--from-jsonl RUNS_JSONL``) compares the configs of a sweep across
training seeds instead: ``mmpeft.eval.sweep_report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmpeft.atomic import save_figure_atomic, write_json_atomic, write_text_atomic
from mmpeft.eval.run_readers import forgetting, latest_eval, probe_changes, probe_curves


def missing_summary(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """What an evaluation left out (``scores["missing"]`` of ``mmpeft eval``): ``{"rows", "damaged_shards",
    "limit", "allow_partial"}``; None for an eval file written before it was recorded."""
    missing = evaluation.get("missing")
    if not isinstance(missing, dict):
        return None
    return {"rows": missing.get("missing_rows", 0), "damaged_shards": len(missing.get("damaged") or {}),
            "limit": missing.get("limit"), "allow_partial": missing.get("allow_partial")}


def missing_cell(missing: dict[str, Any] | None) -> str:
    """``0``, ``3``, ``3 + ? (1 damaged shard)``, ``0; limit 8``; ``not recorded`` for an older eval file."""
    if missing is None:
        return "not recorded"
    cell = str(missing["rows"])
    if missing["damaged_shards"]:
        cell += f" + ? ({missing['damaged_shards']} damaged shard(s) without a manifest count)"
    if missing["limit"] is not None:
        cell += f"; limit {missing['limit']}"
    return cell


def summarize(run_dir: Path) -> dict[str, Any]:
    evaluation = latest_eval(run_dir) or {}
    row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), "step": evaluation.get("step")}
    if evaluation:
        row["missing"] = missing_summary(evaluation)
    if "vqa" in evaluation:
        vqa = evaluation["vqa"]
        row["vqa"] = vqa["overall"]
        intervals = vqa.get("interval_95", {})
        if intervals:
            row["vqa_interval"] = intervals["overall"]
        # eval files written before the official-2021 scorer port keep the per-type means under ``*_mean``
        row["vqa_by_question_type"] = vqa.get("per_question_type_mean", vqa["per_question_type"])
        row["vqa_by_question_type_interval"] = intervals.get("per_question_type", {})
        row["vqa_by_answer_type"] = vqa.get("per_answer_type", {})
        row["vqa_by_answer_type_interval"] = intervals.get("per_answer_type", {})
    if "captions" in evaluation:
        # pycocoevalcap's key "CIDEr" (its CIDEr-D); eval files written before the key change have "CIDEr-D"
        row["cider"] = evaluation["captions"].get("CIDEr", evaluation["captions"].get("CIDEr-D"))
        if "interval_95" in evaluation["captions"]:
            row["cider_interval"] = evaluation["captions"]["interval_95"].get("CIDEr")
    row.update(forgetting(evaluation.get("text_probes", {})))
    row["text_probe_changes"] = probe_changes(evaluation.get("text_probes", {}))
    row["curves"] = probe_curves(run_dir)
    return row


def vl_score(row: dict[str, Any]) -> tuple[str, float, list[float] | None] | None:
    """``(axis label, value, 95% interval or None)`` of a run's vision-language score."""
    if "vqa" in row:
        return "VQA accuracy (%)", row["vqa"], row.get("vqa_interval")
    if "cider" in row:
        return "CIDEr (CIDEr-D)", row["cider"], row.get("cider_interval")
    return None


def _figure(value: Any, interval: Any = None) -> str:
    """``12.34`` or ``12.34 [10.00, 14.50]`` (a 95% interval over test items); empty for a missing value."""
    if value is None:
        return ""
    cell = f"{value:.2f}" if isinstance(value, float) else str(value)
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        cell += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    return cell


def write_markdown(rows: list[dict[str, Any]]) -> str:
    """The cross-run table, then VQA by question and answer type and each text probe's change; a figure with a 95%
    interval (over test items) shows it in brackets. ``missing rows / limit`` says what an evaluation left out
    (skipped samples and rows lost from damaged shards, which ``--allow-partial`` scored without; ``--limit``)."""
    cols = [("run", "run"), ("step", "step"), ("vqa", "VQA acc [95%]"), ("cider", "CIDEr [95%]"),
            ("ppl_change_pct", "ppl change % [95%]"), ("mc_acc_change", "MC acc change (pts) [95%]"),
            ("em_change", "EM change (pts) [95%]"), ("missing", "missing rows / limit")]
    intervals = {"vqa": "vqa_interval", "cider": "cider_interval", "ppl_change_pct": "ppl_change_pct_interval",
                 "mc_acc_change": "mc_acc_change_interval", "em_change": "em_change_interval"}
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        cells = [(missing_cell(row["missing"]) if "missing" in row else "") if key == "missing"
                 else _figure(row.get(key), row.get(intervals.get(key, ""))) for key, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    for title, key in (("question type", "vqa_by_question_type"), ("answer type", "vqa_by_answer_type")):
        types = sorted({t for r in rows for t in r.get(key, {})})
        if not types:
            continue
        lines += ["", f"VQA accuracy by {title} [95%]:", "",
                  "| run | " + " | ".join(types) + " |", "|" + " --- |" * (len(types) + 1)]
        for r in rows:
            by, iv = r.get(key, {}), r.get(key + "_interval", {})
            lines.append(f"| {r['run']} | " + " | ".join(_figure(by.get(t), iv.get(t)) for t in types) + " |")
    changes = [(r["run"], c) for r in rows for c in r.get("text_probe_changes", [])]
    if changes:
        units = {"perplexity": "% of base", "acc": "pts", "exact_match": "pts"}
        lines += ["", "Text probes, adapted vs base [95%]:", "", "| run | probe | metric | change [95%] |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {run} | {c['probe']} | {c['metric']} ({units[c['metric']]}) | "
                  f"{_figure(c['change'], c['interval'])} |" for run, c in changes]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    points = [(r, vl_score(r)) for r in rows if vl_score(r) and "ppl_change_pct" in r]
    if points:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        xs, ys = [0.0], [0.0]  # the axes always show zero change (the base) and a zero score
        for i, (r, (_, score, y_iv)) in enumerate(points):
            x, x_iv = r["ppl_change_pct"], r.get("ppl_change_pct_interval")
            ax.errorbar(x, score, xerr=None if x_iv is None else [[x - x_iv[0]], [x_iv[1] - x]],
                        yerr=None if y_iv is None else [[score - y_iv[0]], [y_iv[1] - score]],
                        fmt="o", capsize=3, color=f"C{i}")
            ax.annotate(r["run"], (x, score), textcoords="offset points",
                        xytext=(5, 5 + 11 * (i % 3)))  # staggered so nearby runs stay readable
            xs += [x, *(x_iv or [])]
            ys += [score, *(y_iv or [])]
        ax.axvline(0, color="grey", lw=0.8, ls=":", label="base (no change)")
        span = max(xs) - min(xs) or 1.0
        ax.set_xlim(min(xs) - 0.1 * span, max(xs) + 0.1 * span)
        ax.set_ylim(0, max(ys) * 1.1 or 1.0)
        ax.set_xlabel("text perplexity change vs base (%)  <- less forgetting")
        ax.set_ylabel(points[0][1][0])
        ax.set_title("vision-language score vs text forgetting (bars: 95% intervals over test items)", fontsize=9)
        fig.tight_layout()
        save_figure_atomic(fig, out / "vl_vs_forgetting.png", dpi=120)
        plt.close(fig)
        written.append(out / "vl_vs_forgetting.png")
    curved = [r for r in rows if r["curves"]]
    if curved:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
        for r in curved:
            for key, series in r["curves"].items():
                steps, values = zip(*series)
                if key.endswith("perplexity_delta_pct"):
                    line = top.plot(steps, values, marker="o", label=f"{r['run']}: {key.split('/')[1]}")[0]
                    _band(top, r["curves"], key, line.get_color())
                elif key == "probe/vqa/overall":
                    line = bottom.plot(steps, values, marker="o", label=f"{r['run']}")[0]
                    _band(bottom, r["curves"], key, line.get_color())
        top.set_ylabel("perplexity change vs base (%)\n(bands: 95% intervals)")
        bottom.set_ylim(bottom=0)
        top.axhline(0, color="grey", lw=0.8, ls=":")
        bottom.set_ylabel("VQA accuracy (%)")
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        top.set_title("forgetting and VL score over training")
        fig.tight_layout()
        save_figure_atomic(fig, out / "curves.png", dpi=120)
        plt.close(fig)
        written.append(out / "curves.png")
    return written


def _band(ax: Any, curves: dict[str, list[tuple[int, float]]], key: str, color: str) -> None:
    """Shade the 95% interval of a curve when its ``_lo``/``_hi`` columns were logged at the same steps."""
    low, high = dict(curves.get(key + "_lo", [])), dict(curves.get(key + "_hi", []))
    steps = [s for s, _ in curves[key] if s in low and s in high]
    if steps:
        ax.fill_between(steps, [low[s] for s in steps], [high[s] for s in steps], color=color, alpha=0.2, lw=0)


def write_report(run_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [str(d) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        raise FileNotFoundError(f"run directories not found: {missing}")
    rows = [summarize(Path(d)) for d in run_dirs]
    write_json_atomic(out / "report.json", rows)
    write_text_atomic(out / "report.md", write_markdown(rows))
    plots = plot(rows, out)
    return {"rows": rows, "files": [out / "report.json", out / "report.md", *plots]}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft report", description=__doc__)
    parser.add_argument("runs", nargs="*", help="run directories (or --sweep / --from-jsonl)")
    parser.add_argument("--out", help="output directory (default runs/report; with --sweep SWEEP_DIR/report; with "
                                      "--from-jsonl the JSONL's directory)")
    sweep = parser.add_argument_group("a sweep across seeds (mmpeft.eval.sweep_report)")
    sweep.add_argument("--sweep", help="a sweep directory (`mmpeft sweep --out`): compare its configs across seeds")
    sweep.add_argument("--from-jsonl", help="the runs.jsonl of an earlier sweep report: rebuild the report from it")
    sweep.add_argument("--baseline", help="config id for paired differences (default: sweep.json's baseline)")
    sweep.add_argument("--vl-metric", help="VL score metric (default vqa/overall, else captions/CIDEr)")
    sweep.add_argument("--forgetting-metric", help="text forgetting metric, lower is better (default "
                                                   "forgetting/ppl_change_pct)")
    args = parser.parse_args(argv)
    options = {"baseline": args.baseline, "vl_metric": args.vl_metric, "forgetting_metric": args.forgetting_metric}
    if args.sweep or args.from_jsonl:
        if args.runs:
            parser.error("give run directories or --sweep / --from-jsonl, not both")
        from mmpeft.eval.sweep_report import report_sweep

        result = report_sweep(args.sweep, args.from_jsonl, args.out, **options)
        print(next(f for f in result["files"] if f.name == "sweep_report.md").read_text())
        print("wrote", ", ".join(str(f) for f in result["files"]))
        return result
    if any(v is not None for v in options.values()):
        parser.error("--baseline, --vl-metric and --forgetting-metric apply to --sweep / --from-jsonl only")
    if not args.runs:
        parser.error("give run directories, --sweep SWEEP_DIR or --from-jsonl RUNS_JSONL")
    out = args.out or "runs/report"
    result = write_report(args.runs, out)
    print((Path(out) / "report.md").read_text())
    print("wrote", ", ".join(str(f) for f in result["files"]))
    for row in result["rows"]:
        if "missing" not in row:  # no eval file at all (an exported model's eval has step None): say why
            print(f"{row['run_dir']}: no eval/*.json yet (mmpeft eval --checkpoint "
                  f"{Path(row['run_dir']) / 'checkpoints' / 'last.ckpt'} ... writes one)")
    if not any(row["curves"] for row in result["rows"]):
        print("no curves.png: no run logged in-loop probes (mmpeft.callbacks.probes.ForgettingProbes) in its "
              "metrics.csv")
    return result
