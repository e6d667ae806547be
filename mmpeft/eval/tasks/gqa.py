"""``GQATask``: GQA exact match (``mmpeft.eval.benchmarks.gqa``, lmms-eval's or the official normalisation)."""

from __future__ import annotations

from typing import Any, Literal

from mmpeft.eval.benchmarks.gqa import NORMALIZATIONS, gqa_accuracy
from mmpeft.eval.tasks.benchmark_rows import interval_of, keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class GQATask(GenerationTask):
    """GQA accuracy over questions, overall, binary / open and per structural and semantic type, with a 95%
    interval over questions (``interval_95``).

    The prompt is the record's: ``data_prep/convert_gqa.py`` writes lmms-eval's (``<image>\\n``, the question,
    ``\\nAnswer the question using a single word or phrase.``).

    Args:
        shards: GQA shards (records with ``eval.answer``, ``eval.question_id``, optional ``eval.structural_type``
            / ``eval.semantic_type``).
        name: the key of the scores (default ``gqa``).
        max_new_tokens: answer budget (default 16, lmms-eval's ``gqa.yaml``).
        normalization: ``lmms_eval`` (``exact_match``, a fraction: case and ``string.punctuation`` ignored) or
            ``official`` (``accuracy`` in percent: LLaVA's ``rstrip('.').lower()`` then eval.py's ``==``).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "gqa", max_new_tokens: int | None = 16,
                 normalization: Literal["lmms_eval", "official"] = "lmms_eval"):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"GQATask {name!r}: normalization={normalization!r}; choose one of {NORMALIZATIONS}")
        super().__init__(shards, name, max_new_tokens)
        self.normalization = normalization
        self.key = "exact_match" if normalization == "lmms_eval" else "accuracy"

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "GQA", ("answer",), "data_prep/convert_gqa.py")
        scores = gqa_accuracy(preds, refs, self.normalization)
        scale = 1.0 if self.normalization == "lmms_eval" else 100.0
        scores["interval_95"] = {self.key: interval_of(scores["per_question"], scale)}
        return scores

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if self.key not in scores:
            return [f"{self.name}: no question scored"]
        parts = [f"{k} {scores[k]:.4f}" for k in ("binary", "open") if scores.get(k) is not None]
        return [f"GQA {self.key} {scores[self.key]:.4f} ({scores['num_questions']} questions, {self.normalization} "
                "normalisation)" + (f"; {', '.join(parts)}" if parts else "")]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if self.key in scores:
            metrics[f"{self.name}/{self.key}"] = float(scores[self.key])
            metrics[f"{self.name}/{self.key}_lo"], metrics[f"{self.name}/{self.key}_hi"] = \
                map(float, scores["interval_95"][self.key])
        return metrics
