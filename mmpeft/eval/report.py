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


def forgetting(text_probes: dict[str, Any]) -> dict[str, float]:
    """Summary of text forgetting: mean perplexity change in percent, mean accuracy changes (points)."""
    out: dict[str, float] = {}
    ppl = [100 * r["delta"]["perplexity"] / r["base"]["perplexity"] for r in text_probes.values()
           if r["kind"] == "perplexity"]
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
        # eval files written before the official-2021 scorer port keep the per-type means under ``*_mean``
        row["vqa_by_question_type"] = evaluation["vqa"].get("per_question_type_mean",
                                                            evaluation["vqa"]["per_question_type"])
    if "captions" in evaluation:
        # pycocoevalcap's key "CIDEr" (its CIDEr-D); eval files written before the key change have "CIDEr-D"
        row["cider"] = evaluation["captions"].get("CIDEr", evaluation["captions"].get("CIDEr-D"))
    row.update(forgetting(evaluation.get("text_probes", {})))
    row["curves"] = probe_curves(run_dir)
    return row


def vl_score(row: dict[str, Any]) -> tuple[str, float] | None:
    if "vqa" in row:
        return "VQA accuracy (%)", row["vqa"]
    if "cider" in row:
        return "CIDEr-D", row["cider"]
    return None


def write_markdown(rows: list[dict[str, Any]]) -> str:
    cols = [("run", "run"), ("step", "step"), ("vqa", "VQA acc"), ("cider", "CIDEr-D"),
            ("ppl_change_pct", "ppl change %"), ("mc_acc_change", "MC acc change (pts)"),
            ("em_change", "EM change (pts)")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        cells = []
        for key, _ in cols:
            v = row.get(key)
            cells.append("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
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
        for i, (r, (_, score)) in enumerate(points):
            ax.scatter(r["ppl_change_pct"], score, s=50)
            ax.annotate(r["run"], (r["ppl_change_pct"], score), textcoords="offset points",
                        xytext=(5, 5 + 11 * (i % 3)))  # staggered so nearby runs stay readable
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("text perplexity change vs base (%)  <- less forgetting")
        ax.set_ylabel(points[0][1][0])
        ax.set_title("vision-language score vs text forgetting")
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
                    top.plot(steps, values, marker="o", label=f"{r['run']}: {key.split('/')[1]}")
                elif key.startswith("probe/vqa/"):
                    bottom.plot(steps, values, marker="o", label=f"{r['run']}")
        top.set_ylabel("perplexity change vs base (%)")
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
