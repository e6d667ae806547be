"""``VQATask``: VQA accuracy (the official scorer, ``mmpeft.eval.vqa``) of greedy answers on VQA shards."""

from __future__ import annotations

from typing import Any

from mmpeft.eval.score_intervals import vqa_intervals
from mmpeft.eval.tasks.generation import GenerationTask, describe_record, first_by_key, first_line
from mmpeft.eval.vqa import vqa_accuracy


def score_vqa(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The official VQA accuracy of ``predictions`` (``predict``'s rows), keyed by ``eval.question_id`` (else the
    record id), with 95% intervals (``interval_95``). Each prediction's first line is its answer.

    Raises:
        ValueError: a record without ``eval.answers``, or two records with the same question id (a data error:
            one question scored twice, or two questions sharing an id, either way one set of references would be
            lost), naming both records.
    """
    refs, preds = {}, {}
    seen: dict[str, dict[str, Any]] = {}
    for p in predictions:
        qid = p["eval"].get("question_id", p["id"])
        if "answers" not in p["eval"]:
            raise ValueError(f"VQA record {describe_record(p)} has no eval.answers; convert it with the VQA fields "
                             "kept")
        first = first_by_key(seen, qid, p)
        if first is not None:
            raise ValueError(f"VQA records {describe_record(first)} and {describe_record(p)} have the same question "
                             f"id {qid!r}: each question must appear once (remove the duplicate from the eval set, "
                             "or give the records distinct eval.question_id)")
        refs[qid] = p["eval"]
        preds[qid] = first_line(p["prediction"])
    scores = vqa_accuracy(preds, refs).to_dict()
    scores["interval_95"] = vqa_intervals(scores, refs)  # over questions (mmpeft.eval.score_intervals)
    return scores


class VQATask(GenerationTask):
    """VQA accuracy of greedy answers: overall, per answer type, per question type, per question, with 95%
    intervals (``score_vqa``).

    Args:
        shards: VQA shards (records with ``eval.answers``, optional ``eval.question_id`` / ``question_type`` /
            ``answer_type``): a directory, glob, brace pattern, or a list.
        name: the key of the scores (default ``vqa``).
        max_new_tokens: answer budget (None: the evaluation's; short answers decode faster).
    """

    empty_scores = {"num_questions": 0}

    def __init__(self, shards: str | list[str], name: str = "vqa", max_new_tokens: int | None = None):
        super().__init__(shards, name, max_new_tokens)

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return score_vqa(predictions)

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "overall" not in scores:
            return [f"{self.name}: no question scored"]
        return [f"VQA accuracy {scores['overall']:.2f} ({scores['num_questions']} questions); by answer type "
                + ", ".join(f"{t} {v:.2f}" for t, v in scores["per_answer_type"].items())]

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        """``<name>/questions`` (scored), and at a point with questions ``<name>/overall`` with its 95% interval
        (``_lo`` / ``_hi``)."""
        metrics = {f"{self.name}/questions": float(scores["num_questions"])}
        if "overall" in scores:
            metrics[f"{self.name}/overall"] = float(scores["overall"])
            low, high = scores["interval_95"]["overall"]
            metrics[f"{self.name}/overall_lo"], metrics[f"{self.name}/overall_hi"] = float(low), float(high)
        return metrics
