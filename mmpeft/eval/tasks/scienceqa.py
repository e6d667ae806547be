"""``ScienceQATask``: ScienceQA(-IMG) multiple choice (``mmpeft.eval.benchmarks.scienceqa``)."""

from __future__ import annotations

from typing import Any, Literal

from mmpeft.eval.benchmarks.scienceqa import EXTRACTIONS, sqa_accuracy
from mmpeft.eval.tasks.benchmark_rows import interval_of, keyed_rows
from mmpeft.eval.tasks.generation import GenerationTask


class ScienceQATask(GenerationTask):
    """ScienceQA accuracy over problems, per subject, grade band and with/without a hint, with a 95% interval over
    problems (``interval_95``).

    The prompt is the record's: ``data_prep/convert_scienceqa.py`` writes lmms-eval's ``scienceqa_img`` one
    (``<image>\\n``, ``Context: {hint}\\n`` when there is a hint, the question, ``\\nA. ...\\nB. ...``, then
    ``\\nAnswer with the option's letter from the given choices directly.``).

    Args:
        shards: ScienceQA shards (records with ``eval.answer`` (index), ``eval.choices``, ``eval.question_id``,
            optional ``subject`` / ``grade`` / ``hint``).
        name: the key of the scores (default ``scienceqa_img``).
        max_new_tokens: answer budget (default 16, lmms-eval's ``scienceqa_img.yaml``).
        extraction: ``lmms_eval`` (``exact_match``, a fraction) or ``llava`` (``accuracy`` in percent, LLaVA's
            ``eval_science_qa.py`` letter parsing).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "scienceqa_img", max_new_tokens: int | None = 16,
                 extraction: Literal["lmms_eval", "llava"] = "lmms_eval"):
        if extraction not in EXTRACTIONS:
            raise ValueError(f"ScienceQATask {name!r}: extraction={extraction!r}; choose one of {EXTRACTIONS}")
        super().__init__(shards, name, max_new_tokens)
        self.extraction = extraction
        self.key = "exact_match" if extraction == "lmms_eval" else "accuracy"

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        preds, refs = keyed_rows(predictions, "ScienceQA", ("answer", "choices"), "data_prep/convert_scienceqa.py")
        scores = sqa_accuracy(preds, refs, self.extraction)
        scale = 1.0 if self.extraction == "lmms_eval" else 100.0
        scores["interval_95"] = {self.key: interval_of(scores["per_question"], scale)}
        return scores

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if self.key not in scores:
            return [f"{self.name}: no problem scored"]
        low, high = scores["interval_95"][self.key]
        return [f"ScienceQA {self.key} {scores[self.key]:.4f} [{low:.4f}, {high:.4f}] ({scores['num_questions']} "
                f"problems, {self.extraction} letter extraction)"]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if self.key in scores:
            metrics[f"{self.name}/{self.key}"] = float(scores[self.key])
            metrics[f"{self.name}/{self.key}_lo"], metrics[f"{self.name}/{self.key}_hi"] = \
                map(float, scores["interval_95"][self.key])
        return metrics
