"""``TextVQATask``: lmms-eval's TextVQA accuracy (``mmpeft.eval.benchmarks.textvqa``) of greedy answers."""

from __future__ import annotations

from typing import Any

from mmpeft.eval.benchmarks.textvqa import textvqa_accuracy
from mmpeft.eval.tasks.benchmark_rows import interval_of, keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class TextVQATask(GenerationTask):
    """TextVQA ``exact_match`` (a fraction: lmms-eval's ``textvqa_val``) over questions, with ``per_question`` and
    a 95% interval over questions (``interval_95.exact_match``).

    The prompt is the record's: ``data_prep/convert_textvqa.py`` writes lmms-eval's (``<image>\\n``, the question
    ``.capitalize()``-d, optionally ``\\nReference OCR token: ...``, then ``\\nAnswer the question using a single
    word or phrase.``).

    Args:
        shards: TextVQA shards (records with ``eval.answers`` and ``eval.question_id``).
        name: the key of the scores (default ``textvqa``).
        max_new_tokens: answer budget (None: the evaluation's; lmms-eval's llava model allows 1024, answers end at
            EOS long before).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "textvqa", max_new_tokens: int | None = None):
        super().__init__(shards, name, max_new_tokens)

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "TextVQA", ("answers",), "data_prep/convert_textvqa.py")
        scores = textvqa_accuracy(preds, {qid: ref["answers"] for qid, ref in refs.items()})
        scores["interval_95"] = {"exact_match": interval_of(scores["per_question"], 1.0)}
        return scores

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "exact_match" not in scores:
            return [f"{self.name}: no question scored"]
        low, high = scores["interval_95"]["exact_match"]
        return [f"TextVQA accuracy {scores['exact_match']:.4f} [{low:.4f}, {high:.4f}] "
                f"({scores['num_questions']} questions; lmms-eval's EvalAI normalisation)"]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if "exact_match" in scores:
            metrics[f"{self.name}/exact_match"] = float(scores["exact_match"])
            metrics[f"{self.name}/exact_match_lo"], metrics[f"{self.name}/exact_match_hi"] = \
                map(float, scores["interval_95"]["exact_match"])
        return metrics
