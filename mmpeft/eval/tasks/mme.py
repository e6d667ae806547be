"""``MMETask``: MME perception / cognition scores (``mmpeft.eval.benchmarks.mme``) of greedy answers."""

from __future__ import annotations

from typing import Any, Literal

from mmpeft.eval.benchmarks.mme import PARSINGS, mme_scores
from mmpeft.eval.tasks.benchmark_rows import keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class MMETask(GenerationTask):
    """MME ``perception`` (max 2000) and ``cognition`` (max 800) totals, with ``per_category`` acc, acc+ (percent)
    and score (0..200). No interval: the score sums per-subtask pair statistics, not a mean over questions.

    The prompt is the record's: ``data_prep/convert_mme.py`` writes lmms-eval's (``<image>\\n``, the question
    stripped with `` Please answer yes or no.`` removed, then ``\\nAnswer the question using a single word or
    phrase.``).

    Args:
        shards: MME shards (records with ``eval.answer``, ``eval.category``, ``eval.image_id``,
            ``eval.question_id``).
        name: the key of the scores (default ``mme``).
        max_new_tokens: answer budget (default 16, lmms-eval's ``mme.yaml``).
        parsing: ``lmms_eval`` (Otter's parser) or ``official`` (MME's ``calculation.py``).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "mme", max_new_tokens: int | None = 16,
                 parsing: Literal["lmms_eval", "official"] = "lmms_eval"):
        if parsing not in PARSINGS:
            raise ValueError(f"MMETask {name!r}: parsing={parsing!r}; choose one of {PARSINGS}")
        super().__init__(shards, name, max_new_tokens)
        self.parsing = parsing

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "MME", ("answer", "category", "image_id"), "data_prep/convert_mme.py")
        return mme_scores(preds, refs, self.parsing)

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "perception" not in scores:
            return [f"{self.name}: no question scored"]
        return [f"MME perception {scores['perception']:.2f}, cognition {scores['cognition']:.2f} "
                f"({scores['num_questions']} questions, {scores['other_answers']} neither yes nor no; "
                f"{self.parsing} parsing)",
                "  " + ", ".join(f"{c} {m['score']:.1f}" for c, m in scores["per_category"].items())]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if "perception" in scores:
            metrics.update({f"{self.name}/{k}": float(scores[k]) for k in ("perception", "cognition")})
        return metrics
