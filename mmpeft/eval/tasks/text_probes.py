"""``TextProbeTask``: text forgetting probes on the adapted model and on its base (``text_probes.compare``)."""

from __future__ import annotations

from typing import Any

from mmpeft.eval.task import EvalContext, EvalTask, TaskResult
from mmpeft.eval.text_probes import TextProbe, compare
from mmpeft.vlm import VisionLanguageModel


class TextProbeTask(EvalTask):
    """Each probe on the adapted model and on its base (adapters off): ``{probe name: {"kind", "adapted", "base",
    "delta", "interval_95"}}`` (``mmpeft.eval.text_probes.compare``).

    Args:
        probes: ``PerplexityProbe``, ``MultipleChoiceProbe``, ``ExactMatchProbe``, ``ChatStyleProbe`` (any
            ``TextProbe``), each with a distinct name.
        name: the key of the scores (default ``text_probes``).

    The base's results come from the context's ``base_cache`` when it holds them (a generation probe's only for the
    same prompt ids) and are stored there otherwise. Generation probes prompt in the context's format (None: the
    model's saved input format).
    """

    def __init__(self, probes: list[TextProbe], name: str = "text_probes"):
        names = [getattr(p, "name", None) for p in probes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"TextProbeTask {name!r}: probe names {repeated} appear more than once; each probe's "
                             "results are reported under its name")
        self.probes, self.name = list(probes), name

    def run(self, vlm: VisionLanguageModel, context: EvalContext) -> TaskResult:
        return TaskResult(compare(vlm, self.probes, base_cache=context.base_cache, progress=context.progress,
                                  renderer=context.renderer))

    def summary(self, scores: dict[str, Any]) -> list[str]:
        lines = []
        for name, r in scores.items():
            metrics = ", ".join(f"{k} {r['adapted'][k]:.4g} (base {r['base'][k]:.4g}, delta {v:+.4g})"
                                for k, v in r["delta"].items())
            lines.append(f"text probe {name}: {metrics}")
        return lines

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        """Per probe and metric: ``<probe>/<metric>`` (adapted), ``..._base``, ``..._delta`` with its 95% interval
        (``_delta_lo`` / ``_delta_hi``); for perplexity also ``<probe>/perplexity_delta_pct`` (and its interval)."""
        metrics: dict[str, float] = {}
        for name, r in scores.items():
            for key, delta in r["delta"].items():
                metrics[f"{name}/{key}"] = float(r["adapted"][key])
                metrics[f"{name}/{key}_base"] = float(r["base"][key])
                metrics[f"{name}/{key}_delta"] = float(delta)
                interval = r.get("interval_95", {}).get(key, {}).get("delta")
                if interval is not None:  # 95% interval over the probe's items, for curves with error bands
                    metrics[f"{name}/{key}_delta_lo"], metrics[f"{name}/{key}_delta_hi"] = interval
                if key == "perplexity":
                    metrics[f"{name}/perplexity_delta_pct"] = 100 * delta / r["base"][key]
                    if interval is not None:
                        metrics[f"{name}/perplexity_delta_pct_lo"] = 100 * interval[0] / r["base"][key]
                        metrics[f"{name}/perplexity_delta_pct_hi"] = 100 * interval[1] / r["base"][key]
        return metrics
