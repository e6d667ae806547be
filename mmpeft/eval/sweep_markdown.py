"""``sweep_report.md`` from the content of ``sweep_report.json`` (``mmpeft.eval.sweep_report.build_report``).

Tables have one row per config. A cell is ``mean ± h``: the mean over seeds and the half-width of its 95% t
interval across seeds, both rounded to the interval's second significant digit; ``(1 seed)`` where one seed gives
no interval, ``(n=k)`` where fewer seeds than the config's counted runs have the metric. In the paired tables a
difference whose interval excludes zero is in bold. Metrics are grouped by the prefix of their flattened name
(``vqa/``, ``captions/``, ``text/``, ...), one table per group.
"""

from __future__ import annotations

import math
from typing import Any

HEADLINE_EXTRA = ("perf/trainable_params", "perf/tokens_per_s", "perf/peak_memory_gib", "time/fit_s", "time/eval_s")


def figure(mean: float, half: float | None) -> str:
    """``45.3 ± 2.1``; without a half-width four significant digits (``1,234,567`` for large counts); ``± 0`` for
    seeds that agree (up to rounding noise)."""
    text = f"{mean:,.0f}" if abs(mean) >= 1e4 else f"{mean:.4g}"
    if half is None or not math.isfinite(half):
        return text
    if half <= 1e-9 * max(1.0, abs(mean)):
        return text + " ± 0"
    digits = min(6, max(0, 1 - math.floor(math.log10(half))))
    return f"{mean:,.{digits}f} ± {half:,.{digits}f}"


def excludes_zero(summary: dict[str, Any]) -> bool:
    """Whether the summary's 95% interval lies wholly above or wholly below zero (False without an interval)."""
    interval = summary.get("interval")
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def cell(summary: dict[str, Any] | None, n_done: int, paired: bool = False) -> str:
    if summary is None:
        return ""
    text = figure(summary["mean"], summary["half_width"])
    if paired and excludes_zero(summary):
        text = f"**{text}**"
    if summary["n"] == 1:
        return text + " (1 seed)"
    return text + (f" (n={summary['n']})" if summary["n"] < n_done else "")


def header(name: str, units: dict[str, str], prefix: str = "") -> str:
    unit = units.get(name, "")
    return f"{name.removeprefix(prefix)}" + (f" ({unit})" if unit else "")


def table(report: dict[str, Any], names: list[str], configs: list[str], paired: bool, prefix: str = "") -> list[str]:
    """One row per config; columns ``names`` (summaries, or paired differences against the baseline)."""
    units = report["units"]
    first = ["config", "n pairs" if paired else "n seeds"]
    lines = ["| " + " | ".join(first + [header(n, units, prefix) for n in names]) + " |",
             "|" + " --- |" * (len(names) + 2)]
    for config in configs:
        entry = report["configs"][config]
        source = entry["paired"] if paired else entry["metrics"]
        n = max((s["n"] for s in source.values()), default=0) if paired else entry["n_done"]
        lines.append("| " + " | ".join([config, str(n), *(cell(source.get(m), n, paired) for m in names)]) + " |")
    return lines + [""]


def groups(names: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(name.split("/", 1)[0], []).append(name)
    return out


def metric_line(label: str, metric: dict[str, Any] | None, role: str) -> str:
    if metric is None:
        return (f"- {label}: none: no counted run has a default {role} metric (choose one with "
                f"`--{role}-metric NAME`); no Pareto front or scatter plot.")
    unit = f", {metric['unit']}" if metric["unit"] else ""
    return f"- {label}: `{metric['name']}` ({metric['label']}{unit})"


def render(report: dict[str, Any], plots: list[str]) -> str:
    configs = list(report["configs"])
    names = sorted(report["units"])
    planned = sum(e["planned"] for e in report["configs"].values())
    done = sum(e["n_done"] for e in report["configs"].values())
    vl, forget = report["vl_metric"], report["forgetting_metric"]
    lines = [f"# Sweep report: {report['sweep']}", "",
             f"{len(configs)} configs, {planned} planned runs, {done} counted (status done, evaluated). "
             f"Figures: {report['interval']}", "",
             metric_line("VL score (higher is better)", vl, "vl"),
             metric_line("Text forgetting (lower is better)", forget, "forgetting")]
    if forget and forget["name"] == "forgetting/ppl_change_pct":
        lines.append("  (each perplexity probe's adapted-minus-base perplexity in percent of the base's, averaged "
                     "over the perplexity probes; the demo's report plots its prose probe alone, here "
                     "`text/ppl_prose/perplexity_change_pct` when present)")
    lines += ["", "## Runs", "", "| config | case | overrides | counted seeds | missing |",
              "| --- | --- | --- | --- | --- |"]
    for config, e in report["configs"].items():
        overrides = ", ".join(f"`{k}={v}`" for k, v in (e["overrides"] or {}).items())
        missing = "; ".join(f"seed {m['seed']}: {m['reason']}" for m in e["missing"]) or "none"
        lines.append(f"| {config} | {e['case'] or ''} | {overrides} | {e['n_done']} of {e['planned']} "
                     f"({', '.join(map(str, e['seeds_done'])) or '-'}) | {missing} |")
    headline = [m["name"] for m in (vl, forget) if m] + [m for m in HEADLINE_EXTRA if m in report["units"]]
    lines += ["", "## Headline: mean ± 95% half-width across seeds", ""] + table(report, headline, configs, False)
    lines += ["## Every metric, by group", ""]
    for group, members in groups(names).items():
        lines += [f"### {group}", ""] + table(report, members, configs, False, prefix=group + "/")
    baseline = report["baseline"]
    if baseline is None:
        lines += ["## Paired differences", "", "No baseline config (`--baseline CONFIG_ID`, or `baseline` in "
                  "sweep.json): no paired differences.", ""]
    else:
        others = [c for c in configs if c != baseline]
        lines += [f"## Paired differences: config - `{baseline}`, matched by seed", "",
                  "Mean of the per-seed differences ± the half-width of their 95% t interval; `n pairs`: seeds both "
                  "configs have counted. Zero outside the interval (in bold): a difference these seeds support; "
                  "with no correction for the many cells, about 1 in 20 cells without a true difference is bold by "
                  "chance.",
                  ""]
        lines += table(report, headline, others, True)
        for group, members in groups(names).items():
            lines += [f"### {group} (paired)", ""] + table(report, members, others, True, prefix=group + "/")
    lines += ["## Pareto front (max VL score, min forgetting)", ""]
    pareto = report["pareto"]
    if pareto is None or not pareto["front"]:
        lines += ["No front: a VL score and a forgetting metric are both needed on some config.", ""]
    else:
        lines += [f"Of the config means, not dominated (no other config has a higher `{vl['name']}` and a lower "
                  f"`{forget['name']}`, one of them strictly): " + ", ".join(f"`{c}`" for c in pareto["front"]),
                  "", "The front is over the means; the intervals in the tables say how far seeds move them.", ""]
        lines += [f"- `{c}`: {vl['name']} {figure(pareto['points'][c][0], None)}, {forget['name']} "
                  f"{figure(pareto['points'][c][1], None)}" for c in pareto["front"]] + [""]
    lines += ["## Plots", ""]
    if "vl_vs_forgetting.png" in plots:
        lines.append("- `vl_vs_forgetting.png`: per config the mean VL score against the mean forgetting; error bars "
                     "in both directions are the 95% t intervals across seeds (none for one seed); the Pareto front "
                     "is the dashed line through the configs listed above. Bars are clipped to the values the metric "
                     "can take (an accuracy to 0-100 %).")
    if "curves.png" in plots:
        lines.append("- `curves.png`: the in-loop probes (`metrics.csv` `probe/*`) over training steps, per config "
                     "the mean over seeds with a shaded 95% t band across seeds (none where one seed logged the "
                     "step; clipped to the values the metric can take): top, perplexity change vs base (mean over "
                     "perplexity probes); bottom, the VL probe.")
    if not plots:
        lines.append("None: no config has both metrics of the scatter plot, and no run logged probe curves.")
    return "\n".join(lines) + "\n"
