"""The sweep report's two plots, from the content of ``sweep_report.json`` alone.

- ``vl_vs_forgetting.png``: per config the mean VL score (y) against the mean text forgetting (x), error bars in
  both directions the 95% t intervals across seeds (none for one seed), every point numbered (the legend,
  beside the axes, names the numbers), the Pareto front
  (max VL, min forgetting) a dashed line through ringed points. The axes include zero forgetting (the base) and,
  for a score that cannot be negative, a zero score.
- ``curves.png``: the in-loop probes over training steps, per config the mean over seeds and a shaded 95% t band
  across seeds: top, the perplexity change vs base (mean over perplexity probes); bottom, the VL probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmpeft.atomic import save_figure_atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axis_label(metric: dict[str, Any]) -> str:
    return f"{metric['label']} ({metric['unit']})" if metric["unit"] else metric["label"]


def _errors(summary: dict[str, Any]) -> float | None:
    return summary["half_width"]


def plot_vl_vs_forgetting(report: dict[str, Any], out: Path) -> Path | None:
    """The scatter plot, or None when no config has both the VL and the forgetting metric."""
    pareto, vl, forget = report["pareto"], report["vl_metric"], report["forgetting_metric"]
    if not pareto or not pareto["points"]:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    xs, ys = [0.0], []
    for i, (config, (y, x)) in enumerate(pareto["points"].items()):
        metrics = report["configs"][config]["metrics"]
        x_half, y_half = _errors(metrics[forget["name"]]), _errors(metrics[vl["name"]])
        ax.errorbar(x, y, xerr=x_half, yerr=y_half, fmt="o", capsize=3, color=f"C{i % 10}",
                    label=f"{i + 1}: {config} (n={report['configs'][config]['n_done']})")
        # a number beside the point, the name in the legend: full names collide when configs lie close together
        ax.annotate(str(i + 1), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=f"C{i % 10}",
                    fontweight="bold")
        xs += [x - (x_half or 0), x + (x_half or 0)]
        ys += [y - (y_half or 0), y + (y_half or 0)]
    front = [pareto["points"][c] for c in pareto["front"]]
    ax.plot([p[1] for p in front], [p[0] for p in front], ls="--", color="black", lw=1, zorder=0,
            label="Pareto front (max VL, min forgetting)")
    ax.scatter([p[1] for p in front], [p[0] for p in front], s=160, facecolors="none", edgecolors="black", lw=1)
    ax.axvline(0, color="grey", lw=0.8, ls=":", label="base (no change)")
    x_span = max(xs) - min(xs) or 1.0
    ax.set_xlim(min(xs) - 0.1 * x_span, max(xs) + 0.1 * x_span)
    low = min(ys) if min(ys) < 0 else 0.0  # a score axis starts at zero unless the score itself goes below
    high = max(ys)
    ax.set_ylim(low - 0.05 * ((high - low) or 1.0), high + 0.1 * ((high - low) or 1.0))
    ax.set_xlabel(_axis_label(forget) + "\n<- less forgetting", fontsize=9)
    ax.set_ylabel(_axis_label(vl), fontsize=9)
    ax.set_title("VL score vs text forgetting: mean over seeds\n(bars: 95% t intervals across seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside the axes
    fig.tight_layout()
    path = save_figure_atomic(fig, out / "vl_vs_forgetting.png", dpi=120)
    plt.close(fig)
    return path


def _curve(ax: Any, points: list[dict[str, Any]], label: str, color: str) -> None:
    steps = [p["step"] for p in points]
    ax.plot(steps, [p["mean"] for p in points], marker="o", ms=3, color=color, label=label)
    banded = [p for p in points if p["interval"] is not None]
    if banded:
        ax.fill_between([p["step"] for p in banded], [p["interval"][0] for p in banded],
                        [p["interval"][1] for p in banded], color=color, alpha=0.2, lw=0)


def plot_curves(report: dict[str, Any], out: Path) -> Path | None:
    """The curves plot, or None when no counted run logged probe curves."""
    curves = report["curves"]
    if not any(c["forgetting"] or c["vl"] for c in curves.values()):
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    vl_column = None
    for i, (config, c) in enumerate(curves.items()):
        label = f"{config} (n={report['configs'][config]['n_done']})"
        if c["forgetting"]:
            _curve(top, c["forgetting"], label, f"C{i % 10}")
        if c["vl"]:
            _curve(bottom, c["vl"], label, f"C{i % 10}")
            vl_column = vl_column or c["vl_column"]
    top.axhline(0, color="grey", lw=0.8, ls=":")
    top.set_ylabel("perplexity change vs base (%)\nmean over perplexity probes", fontsize=9)
    vqa = vl_column is not None and vl_column.endswith("/overall")
    bottom.set_ylabel(f"{vl_column or 'VL probe'}" + (" (VQA accuracy, %)" if vqa else ""), fontsize=9)
    bottom.set_ylim(bottom=min(0.0, bottom.get_ylim()[0]))
    bottom.set_xlabel("training step")
    for ax in (top, bottom):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no run logged this probe", ha="center", va="center", transform=ax.transAxes)
    top.set_title("in-loop probes: mean over seeds (bands: 95% t intervals across seeds)", fontsize=10)
    fig.tight_layout()
    path = save_figure_atomic(fig, out / "curves.png", dpi=120)
    plt.close(fig)
    return path
