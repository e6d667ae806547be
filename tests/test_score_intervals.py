"""Task-score intervals are built from the scorers' own per-item values."""

import pytest

from mmpeft.eval.intervals import proportion_interval
from mmpeft.eval.score_intervals import (
    caption_intervals,
    paired_caption_difference,
    paired_vqa_difference,
    vqa_intervals,
)
from mmpeft.eval.vqa import vqa_accuracy


def vqa_set(predictions):
    refs = {i: {"answers": ["red"] * 10, "question_type": "what color is the" if i < 6 else "how many",
                "answer_type": "other" if i < 6 else "number"} for i in range(10)}
    return vqa_accuracy(dict(enumerate(predictions)), refs).to_dict(), refs


def test_vqa_intervals_use_the_per_question_accuracies():
    scores, refs = vqa_set(["red", "red", "blue", "red", "red", "red", "red", "no", "red", "red"])
    intervals = vqa_intervals(scores, refs)
    assert intervals["overall"] == pytest.approx([100 * x for x in proportion_interval(8, 10)])
    assert intervals["per_question_type"]["how many"] == pytest.approx([100 * x for x in proportion_interval(3, 4)])
    assert set(intervals["per_answer_type"]) == {"other", "number"}
    lo, hi = intervals["overall"]
    assert lo < scores["overall"] < hi


def test_paired_vqa_difference_is_zero_for_identical_answers_and_positive_for_a_better_run():
    good, _ = vqa_set(["red"] * 10)
    bad, _ = vqa_set(["blue"] * 10)
    assert paired_vqa_difference(good, good) == [0.0, 0.0]
    low, high = paired_vqa_difference(good, bad)
    assert low == high == 100.0  # every question differs by exactly 100 points


def test_caption_intervals_cover_mean_metrics_and_mark_corpus_ones():
    captions = {"CIDEr": 0.5, "ROUGE_L": 0.4, "Bleu_4": 0.2, "METEOR": None,
                "per_image": {i: {"CIDEr": c, "ROUGE_L": r} for i, (c, r) in
                              enumerate([(0.1, 0.2), (0.9, 0.6), (0.5, 0.4), (0.5, 0.4)])}}
    out = caption_intervals(captions)
    assert out["Bleu_4"] == "corpus-level" and "METEOR" not in out
    assert out["CIDEr"][0] < 0.5 < out["CIDEr"][1]
    assert paired_caption_difference(captions, captions) == [0.0, 0.0]
    with pytest.raises(ValueError, match="corpus statistic"):
        paired_caption_difference(captions, captions, "Bleu_4")
