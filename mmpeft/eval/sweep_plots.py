"""The sweep report's two plots, from the content of ``sweep_report.json`` alone.

- ``vl_vs_forgetting.png``: per config the mean VL score (y) against the mean text forgetting (x), error bars in
  both directions the 95% t intervals across seeds (none for one seed), every point numbered (the legend,
  beside the axes, names the numbers), the Pareto front
  (max VL, min forgetting) a dashed line through ringed points. The axes include zero forgetting (the base) and,
  for a score that cannot be negative, a zero score.
- ``curves.png``: the in-loop probes over training steps, per config the mean over seeds and a shaded 95% t band
  across seeds: top, the perplexity change vs base (mean over perplexity probes); bottom, the VL probe.

Bars and bands are clipped to the values the metric can take (``metric_range``: an accuracy's t interval of
92 +- 13 % is drawn from 79 to 100), so no plot shows an impossible value; the tables keep the unclipped half-widths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmpeft.atomic import save_figure_atomic
from mmpeft.eval.sweep_collect import metric_range, metric_unit


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axis_label(metric: dict[str, Any]) -> str:
    return f"{metric['label']} ({metric['unit']})" if metric["unit"] else metric["label"]


def clipped_interval(mean: float, half_width: float | None, bounds: tuple[float | None, float | None]
                     ) -> tuple[float, float]:
    """(below, above): the distances from ``mean`` to the ends of mean +- half_width clipped to ``bounds``
    (``metric_range``); (0, 0) without an interval."""
    if half_width is None:
        return 0.0, 0.0
    low, high = mean - half_width, mean + half_width
    if bounds[0] is not None:
        low = max(low, min(bounds[0], mean))
    if bounds[1] is not None:
        high = min(high, max(bounds[1], mean))
    return mean - low, high - mean


def _errors(summary: dict[str, Any], mean: float, unit: str) -> list[list[float]] | None:
    """matplotlib's ``[[below], [above]]`` for one point, or None (no bar: one seed gives no interval)."""
    if summary["half_width"] is None:
        return None
    below, above = clipped_interval(mean, summary["half_width"], metric_range(unit))
    return [[below], [above]]


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
        x_err, y_err = _errors(metrics[forget["name"]], x, forget["unit"]), _errors(metrics[vl["name"]], y, vl["unit"])
        ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", capsize=3,
                    color=f"C{i % 10}", label=f"{i + 1}: {config} (n={report['configs'][config]['n_done']})")
        # a number beside the point, the name in the legend: full names collide when configs lie close together
        ax.annotate(str(i + 1), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=f"C{i % 10}",
                    fontweight="bold")
        xs += [x - x_err[0][0], x + x_err[1][0]] if x_err else [x]
        ys += [y - y_err[0][0], y + y_err[1][0]] if y_err else [y]
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


def _curve(ax: Any, points: list[dict[str, Any]], label: str, color: str, unit: str) -> None:
    steps = [p["step"] for p in points]
    ax.plot(steps, [p["mean"] for p in points], marker="o", ms=3, color=color, label=label)
    banded = [p for p in points if p["interval"] is not None]
    if banded:
        bounds = metric_range(unit)
        below_above = [clipped_interval(p["mean"], p["half_width"], bounds) for p in banded]
        ax.fill_between([p["step"] for p in banded], [p["mean"] - b for p, (b, _) in zip(banded, below_above)],
                        [p["mean"] + a for p, (_, a) in zip(banded, below_above)], color=color, alpha=0.2, lw=0)


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
            _curve(top, c["forgetting"], label, f"C{i % 10}", "% of base")
        if c["vl"]:
            _curve(bottom, c["vl"], label, f"C{i % 10}", metric_unit((c["vl_column"] or "").removeprefix("probe/")))
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
