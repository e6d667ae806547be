"""``LmEvalTask``: lm-evaluation-harness tasks on the adapted model and its base (``mmpeft.eval.lm_eval_bridge``)."""

from __future__ import annotations

import importlib.util
from typing import Any

from mmpeft.eval.task import EvalContext, EvalTask, TaskResult
from mmpeft.vlm import VisionLanguageModel


class LmEvalTask(EvalTask):
    """lm-eval tasks (their own prompt formats, never the model's) on the adapted LLM and its base:
    ``{task: {"adapted", "base", "delta"}}`` (numeric metrics). Needs the optional ``lm-eval`` package.

    Args:
        tasks: lm-eval task names (from its registry, which needs the hub for datasets, or from ``include_path``).
        name: the key of the scores (default ``lm_eval``).
        include_path: a directory of local lm-eval task YAMLs (works offline).

    The evaluation's ``batch_size`` and ``limit`` (samples per lm-eval task) apply.
    """

    def __init__(self, tasks: list[str], name: str = "lm_eval", include_path: str | None = None):
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"LmEvalTask {name!r}: tasks={tasks!r}; give a non-empty list of lm-eval task names")
        self.tasks, self.name, self.include_path = list(tasks), name, include_path

    def check(self) -> None:
        if importlib.util.find_spec("lm_eval") is None:
            raise RuntimeError(f"the {self.name!r} task runs lm-evaluation-harness, which is not installed: "
                               "pip install -r requirements-eval.txt")

    def run(self, vlm: VisionLanguageModel, context: EvalContext) -> TaskResult:
        from mmpeft.eval.lm_eval_bridge import lm_eval_compare

        return TaskResult(lm_eval_compare(vlm, self.tasks, self.include_path, context.batch_size, context.limit))

    def summary(self, scores: dict[str, Any]) -> list[str]:
        return [f"lm-eval {task}: " + ", ".join(f"{k} {r['adapted'][k]:.4g} (base {r['base'][k]:.4g}, delta "
                                                 f"{v:+.4g})" for k, v in r["delta"].items())
                for task, r in scores.items()]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        """``<name>/<task>/<metric>`` (adapted) and ``..._delta`` for every numeric metric."""
        return {key: value for task, r in scores.items() for metric, delta in r["delta"].items()
                for key, value in ((f"{self.name}/{task}/{metric}", float(r["adapted"][metric])),
                                   (f"{self.name}/{task}/{metric}_delta", float(delta)))}
