"""``mmpeft report RUN_DIR...``: one table and two plots across runs.

From each run directory: its latest ``eval/*.json`` (``mmpeft eval``) and the probe curves in ``metrics.csv``
(``ForgettingProbes`` callback). Writes ``report.json``, ``report.md``, ``vl_vs_forgetting.png`` (VL score against
text forgetting, one point per run) and ``curves.png`` (forgetting and VL score over training steps).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any


def latest_eval(run_dir: Path) -> dict[str, Any] | None:
    files = sorted((run_dir / "eval").glob("*.json")) if (run_dir / "eval").is_dir() else []
    evals = [json.loads(f.read_text()) for f in files if not f.name.endswith(".predictions.json")]
    evals = [e for e in evals if isinstance(e, dict)]
    return max(evals, key=lambda e: e.get("step") or -1) if evals else None


def probe_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value)]}`` for every ``probe/...`` column of ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("probe/") and value not in ("", None):
                    curves.setdefault(key, []).append((int(row["step"]), float(value)))
    return curves


def forgetting(text_probes: dict[str, Any]) -> dict[str, Any]:
    """Summary of text forgetting: mean perplexity change in percent, mean accuracy changes (points); with one
    perplexity probe, also its 95% interval (``ppl_change_pct_interval``, over the probe's windows)."""
    out: dict[str, Any] = {}
    ppl_probes = [r for r in text_probes.values() if r["kind"] == "perplexity"]
    ppl = [100 * r["delta"]["perplexity"] / r["base"]["perplexity"] for r in ppl_probes]
    interval = ppl_probes[0].get("interval_95", {}).get("perplexity", {}).get("delta") if len(ppl_probes) == 1 else None
    if interval is not None:
        out["ppl_change_pct_interval"] = [100 * v / ppl_probes[0]["base"]["perplexity"] for v in interval]
    mc = [100 * r["delta"]["acc"] for r in text_probes.values() if r["kind"] == "multiple_choice"]
    em = [100 * r["delta"]["exact_match"] for r in text_probes.values() if r["kind"] == "exact_match"]
    for name, values in (("ppl_change_pct", ppl), ("mc_acc_change", mc), ("em_change", em)):
        if values:
            out[name] = sum(values) / len(values)
    return out


def summarize(run_dir: Path) -> dict[str, Any]:
    evaluation = latest_eval(run_dir) or {}
    row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), "step": evaluation.get("step")}
    if "vqa" in evaluation:
        row["vqa"] = evaluation["vqa"]["overall"]
        if "interval_95" in evaluation["vqa"]:
            row["vqa_interval"] = evaluation["vqa"]["interval_95"]["overall"]
        # eval files written before the official-2021 scorer port keep the per-type means under ``*_mean``
        row["vqa_by_question_type"] = evaluation["vqa"].get("per_question_type_mean",
                                                            evaluation["vqa"]["per_question_type"])
    if "captions" in evaluation:
        # pycocoevalcap's key "CIDEr" (its CIDEr-D); eval files written before the key change have "CIDEr-D"
        row["cider"] = evaluation["captions"].get("CIDEr", evaluation["captions"].get("CIDEr-D"))
        if "interval_95" in evaluation["captions"]:
            row["cider_interval"] = evaluation["captions"]["interval_95"].get("CIDEr")
    row.update(forgetting(evaluation.get("text_probes", {})))
    row["curves"] = probe_curves(run_dir)
    return row


def vl_score(row: dict[str, Any]) -> tuple[str, float, list[float] | None] | None:
    """``(axis label, value, 95% interval or None)`` of a run's vision-language score."""
    if "vqa" in row:
        return "VQA accuracy (%)", row["vqa"], row.get("vqa_interval")
    if "cider" in row:
        return "CIDEr (CIDEr-D)", row["cider"], row.get("cider_interval")
    return None


def write_markdown(rows: list[dict[str, Any]]) -> str:
    """The cross-run table; a figure with a 95% interval (over test items) shows it in brackets."""
    cols = [("run", "run"), ("step", "step"), ("vqa", "VQA acc [95%]"), ("cider", "CIDEr [95%]"),
            ("ppl_change_pct", "ppl change % [95%]"), ("mc_acc_change", "MC acc change (pts)"),
            ("em_change", "EM change (pts)")]
    intervals = {"vqa": "vqa_interval", "cider": "cider_interval", "ppl_change_pct": "ppl_change_pct_interval"}
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        cells = []
        for key, _ in cols:
            v = row.get(key)
            cell = "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
            iv = row.get(intervals.get(key, ""))
            cells.append(cell + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if v is not None and iv else ""))
        lines.append("| " + " | ".join(cells) + " |")
    qtypes = sorted({q for r in rows for q in r.get("vqa_by_question_type", {})})
    if qtypes:
        lines += ["", "VQA accuracy by question type:", "",
                  "| run | " + " | ".join(qtypes) + " |", "|" + " --- |" * (len(qtypes) + 1)]
        for r in rows:
            by = r.get("vqa_by_question_type", {})
            lines.append(f"| {r['run']} | " + " | ".join(f"{by[q]:.2f}" if q in by else "" for q in qtypes) + " |")
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
        fig.savefig(out / "vl_vs_forgetting.png", dpi=120)
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
        fig.savefig(out / "curves.png", dpi=120)
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
    (out / "report.json").write_text(json.dumps(rows, indent=2))
    (out / "report.md").write_text(write_markdown(rows))
    plots = plot(rows, out)
    return {"rows": rows, "files": [out / "report.json", out / "report.md", *plots]}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="mmpeft report", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", default="runs/report", help="output directory")
    args = parser.parse_args(argv)
    result = write_report(args.runs, args.out)
    print((Path(args.out) / "report.md").read_text())
    print("wrote", ", ".join(str(f) for f in result["files"]))
    return result
