"""95% intervals of the task scores ``mmpeft eval`` reports, computed from their per-item values.

- VQA: overall, per question type and per answer type, from the scorer's per-question accuracies (Wilson when every
  question scores 0 or 100, as with unanimous synthetic answers; percentile bootstrap otherwise). In percent.
- Captions: ``CIDEr`` and ``ROUGE_L``, whose corpus figures are means of the per-image scores in pycocoevalcap, by
  a bootstrap over images. BLEU and METEOR are corpus statistics (clipped n-gram counts, METEOR's aligned
  fragments), not means of per-image values; they get no interval here (``"corpus-level"``).
- Paired differences between two score sets on the same items (``paired_vqa_difference``,
  ``paired_caption_difference``): run A vs run B, or a run vs a baseline answered on the same questions.

Intervals are over test items only (see ``mmpeft.eval.intervals``): training-seed variation is not in them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from mmpeft.eval.intervals import mean_interval, paired_difference_interval, score_interval

CORPUS_LEVEL = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR")
MEAN_OF_IMAGES = ("CIDEr", "ROUGE_L")


def _percent(interval: tuple[float, float]) -> list[float]:
    return [100 * interval[0], 100 * interval[1]]


def vqa_intervals(vqa: Mapping[str, Any], references: Mapping[Any, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"overall": [lo, hi], "per_question_type": {t: [lo, hi]}, "per_answer_type": {t: [lo, hi]}}`` in percent.

    Args:
        vqa: ``VQAResult.to_dict()`` (its ``per_question`` holds each question's accuracy in percent).
        references: ``{question_id: {"question_type", "answer_type", ...}}`` of the same questions.
    """
    refs = {str(k): v for k, v in references.items()}
    by_qtype: dict[str, list[float]] = defaultdict(list)
    by_atype: dict[str, list[float]] = defaultdict(list)
    values = []
    for qid, accuracy in vqa["per_question"].items():
        value = accuracy / 100
        values.append(value)
        by_qtype[refs[qid].get("question_type", "")].append(value)
        by_atype[refs[qid].get("answer_type", "")].append(value)
    return {"overall": _percent(score_interval(values)),
            "per_question_type": {t: _percent(score_interval(v)) for t, v in by_qtype.items()},
            "per_answer_type": {t: _percent(score_interval(v)) for t, v in by_atype.items()}}


def caption_intervals(captions: Mapping[str, Any]) -> dict[str, Any]:
    """``{"CIDEr": [lo, hi], "ROUGE_L": [lo, hi], <corpus-level metric>: "corpus-level"}`` from ``per_image``."""
    per_image = captions["per_image"]
    out: dict[str, Any] = {}
    for metric in MEAN_OF_IMAGES:
        values = [scores[metric] for scores in per_image.values() if scores.get(metric) is not None]
        if values:
            out[metric] = list(mean_interval(values))  # continuous scores: bootstrap, never Wilson
    for metric in CORPUS_LEVEL:
        if captions.get(metric) is not None:
            out[metric] = "corpus-level"
    return out


def paired_vqa_difference(a: Mapping[str, Any], b: Mapping[str, Any], question_ids: list[str] | None = None
                          ) -> list[float]:
    """Interval (percent) of ``mean(a) - mean(b)`` over the questions both scored (or ``question_ids``)."""
    ids = question_ids if question_ids is not None else [q for q in a["per_question"] if q in b["per_question"]]
    if not ids:
        raise ValueError("no question scored in both: a paired difference needs the same questions")
    return list(paired_difference_interval([a["per_question"][q] for q in ids], [b["per_question"][q] for q in ids]))


def paired_caption_difference(a: Mapping[str, Any], b: Mapping[str, Any], metric: str = "CIDEr") -> list[float]:
    """Interval of ``mean(a) - mean(b)`` of a per-image ``metric`` over the images both scored."""
    if metric not in MEAN_OF_IMAGES:
        raise ValueError(f"{metric} is a corpus statistic, not a mean over images: no paired interval")
    ids = [k for k in a["per_image"] if k in b["per_image"]]
    if not ids:
        raise ValueError("no image scored in both: a paired difference needs the same images")
    return list(paired_difference_interval([a["per_image"][k][metric] for k in ids],
                                           [b["per_image"][k][metric] for k in ids]))
