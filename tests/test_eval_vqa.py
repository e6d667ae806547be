"""VQA accuracy against values worked out by hand from the official scorer's rules (vqaEval.py, GT-Vision-Lab),
including its quirks: unanimous annotator answers are compared raw, annotator answers never lose articles, the
per-type breakdown uses each question's last leave-one-out subset."""

import pytest

from mmpeft.eval.vqa import normalize_answer, process_punctuation, vqa_accuracy

CURLY = "\u2019"


@pytest.mark.parametrize("raw,expected", [
    ("Yes.", "yes"),
    ("\tred\n", "red"),
    ("two", "2"),
    ("the dog", "dog"),
    ("hot dog, mustard", "hot dog mustard"),   # a mark next to a space is deleted
    ("hot,dog", "hot dog"),                    # otherwise it becomes a space
    ("1,000 people?", "1000 people"),          # a digit,digit comma deletes every mark
    ("3.5", "3.5"),                            # a period before a digit stays
    ("dont know", f"don{CURLY}t know"),        # the scorer's contraction table (curly apostrophe)
    ("isn't", "isn t"),                        # "'" is punctuation: replaced by a space, then split
    ("A  Few   Spaces", "few spaces"),
])
def test_normalization(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_rule_removes_at_most_32_periods():
    assert process_punctuation("." * 40) == "." * 8


def ref(answers, qtype="what is", atype="other"):
    return {"answers": answers, "question_type": qtype, "answer_type": atype}


def test_scores_match_the_official_rules():
    references = {
        1: ref(["yes"] * 10, "is the", "yes/no"),
        2: ref(["2"] * 4 + ["two"] * 3 + ["3"] * 3, "how many", "number"),
        3: ref(["2"] * 4 + ["two"] * 3 + ["3"] * 3, "how many", "number"),
        4: ref(["a dog"] * 10),
        5: ref(["a dog"] * 9 + ["dog"]),
        6: ref([f"don{CURLY}t know"] * 10),
        7: ref(["don't know"] * 10),
    }
    predictions = {1: "Yes.", 2: "two", 3: "3", 4: "a dog", 5: "the dog", 6: "dont know", 7: "dont know"}
    result = vqa_accuracy(predictions, references)
    # per question (10-subset means): 1.0, 1.0, 0.9, 0 (unanimous gts stay raw: "a dog" != "dog"),
    # 0.3 (9 subsets see one "dog": 1/3 each), 1.0, 0 (ASCII apostrophe != the table's curly one)
    assert result.per_question == {1: 100.0, 2: 100.0, 3: 90.0, 4: 0.0, 5: 30.0, 6: 100.0, 7: 0.0}
    assert result.overall == round(100 * (1 + 1 + 0.9 + 0 + 0.3 + 1 + 0) / 7, 2) == 60.0
    # official per-type figures use the last subset: question 3 leaves out a "3" -> 2/3; question 5 -> 0
    assert result.per_answer_type == {"yes/no": 100.0, "number": round(100 * (1 + 2 / 3) / 2, 2), "other": 25.0}
    assert result.per_answer_type_mean == {"yes/no": 100.0, "number": 95.0, "other": 32.5}
    assert result.per_question_type["how many"] == 83.33 and result.per_question_type_mean["how many"] == 95.0


def test_bad_input_names_the_ids():
    with pytest.raises(ValueError, match="no predictions"):
        vqa_accuracy({}, {1: ref(["a"] * 10)})
    with pytest.raises(ValueError, match=r"1 question\(s\) without a prediction \(e.g. \[2\]\).*\(e.g. \[9\]\)"):
        vqa_accuracy({1: "a", 9: "b"}, {1: ref(["a"] * 10), 2: ref(["b"] * 10)})
    with pytest.raises(ValueError, match="question 'q7' has no reference answers"):
        vqa_accuracy({"q7": "a"}, {"q7": {"answers": []}})
