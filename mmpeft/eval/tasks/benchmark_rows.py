"""Predictions of a benchmark task keyed by their question id, with the eval fields its scorer needs."""

from __future__ import annotations

from typing import Any

from mmpeft.eval.intervals import score_interval
from mmpeft.eval.tasks.generation import describe_record, first_by_key


def keyed_rows(predictions: list[dict[str, Any]], benchmark: str, required: tuple[str, ...], converter: str
               ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``({question_id: generated text}, {question_id: eval fields})`` of ``predict``'s rows, keyed by
    ``eval.question_id`` (else the record id) as text. The whole generated text is kept: the benchmark scorers
    read it as their references do.

    Raises:
        ValueError: a record without one of ``required`` eval fields (naming it and ``converter``), or two records
            with one question id (naming both: one question would be scored twice, or one set of references lost).
    """
    preds: dict[str, str] = {}
    refs: dict[str, dict[str, Any]] = {}
    seen: dict[str, dict[str, Any]] = {}
    for p in predictions:
        missing = [f for f in required if f not in p["eval"]]
        if missing:
            raise ValueError(f"{benchmark} record {describe_record(p)} has no eval.{', eval.'.join(missing)}; "
                             f"convert the set with {converter}")
        qid = p["eval"].get("question_id", p["id"])
        first = first_by_key(seen, qid, p)
        if first is not None:
            raise ValueError(f"{benchmark} records {describe_record(first)} and {describe_record(p)} have the same "
                             f"question id {qid!r}: each question must appear once (remove the duplicate, or give "
                             "the records distinct eval.question_id)")
        preds[str(qid)], refs[str(qid)] = p["prediction"], p["eval"]
    return preds, refs


def interval_of(per_question: dict[str, float], scale: float) -> list[float]:
    """The 95% interval over questions of the mean of per-question scores in [0, 1] (Wilson when all are 0/1,
    else a bootstrap; ``mmpeft.eval.intervals.score_interval``), times ``scale`` (1: fractions, 100: percent)."""
    low, high = score_interval(list(per_question.values()))
    return [scale * low, scale * high]
