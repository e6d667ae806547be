"""``MMBenchTask``: MMBench circular accuracy with rule-based matching (``mmpeft.eval.benchmarks.mmbench``)."""

from __future__ import annotations

from typing import Any

from mmpeft.eval.benchmarks.mmbench import mmbench_scores
from mmpeft.eval.tasks.benchmark_rows import interval_of, keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class MMBenchTask(GenerationTask):
    """MMBench circular ``accuracy`` (a fraction over questions; every option rotation must be right), per
    category and L2 category, with a 95% interval over questions and ``judge_needed`` (questions VLMEvalKit would
    have sent to its GPT judge; scored 0 here, no judge is called).

    The prompt is the record's: ``data_prep/convert_mmbench.py`` writes lmms-eval's ``mmbench_en`` one
    (``<image>\\n``, ``{hint} `` when there is a hint, the question, `` There are several options:\\nA. ...``, then
    ``\\n\\nAnswer with the option's letter from the given choices directly.``).

    Args:
        shards: MMBench shards (one record per TSV row: ``eval.index``, ``eval.answer``, ``eval.options``,
            ``eval.category``, ``eval.l2_category``, ``eval.split``).
        name: the key of the scores (default ``mmbench``).
        max_new_tokens: answer budget (None: the evaluation's; lmms-eval allows 1024, letters end long before).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "mmbench", max_new_tokens: int | None = None):
        super().__init__(shards, name, max_new_tokens)

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "MMBench", ("index", "answer", "options"),
                                 "data_prep/convert_mmbench.py")
        scores = mmbench_scores(preds, refs)
        scores["interval_95"] = {"accuracy": interval_of(scores["per_question"], 1.0)}
        return scores

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "accuracy" not in scores:
            return [f"{self.name}: no question scored"]
        low, high = scores["interval_95"]["accuracy"]
        return [f"MMBench circular accuracy {scores['accuracy']:.4f} [{low:.4f}, {high:.4f}] "
                f"({scores['num_questions']} questions, {scores['num_rows']} rotations; {scores['judge_needed']} "
                "would need VLMEvalKit's GPT judge, scored 0: no judge used)"]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if "accuracy" in scores:
            metrics[f"{self.name}/accuracy"] = float(scores["accuracy"])
            metrics[f"{self.name}/judge_needed"] = float(scores["judge_needed"])
            metrics[f"{self.name}/accuracy_lo"], metrics[f"{self.name}/accuracy_hi"] = \
                map(float, scores["interval_95"]["accuracy"])
        return metrics
