"""POPE (object hallucination, yes/no): accuracy, precision, recall, F1 and yes-ratio, per split and pooled.

Two readings of the generated text, chosen by ``parsing``:

``lmms_eval`` -- EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
``lmms_eval/tasks/pope/utils.py`` (``pope_process_results`` and the ``pope_aggregate_*`` functions; tasks ``pope``,
``pope_adv`` / ``pope_pop`` / ``pope_random``). The answer is the text lower-cased and stripped, compared whole with
``"yes"`` / ``"no"``. Quirks kept: ``"Yes."`` or ``"yes, there is"`` is neither yes nor no: wrong for accuracy and
counted in no cell of precision (TP / (TP + FP), only answers equal to ``"yes"``) or recall (TP / (TP + FN), FN
only answers equal to ``"no"``); ``yes_ratio`` is the share of GROUND-TRUTH ``yes`` (the reference counts ``gt``,
not the prediction), so it does not depend on the model; a zero denominator gives 0.

``official`` -- AoiDragon/POPE at commit 08d957b917e5a378a2f99d35b6293c536a66298b, ``evaluate.py`` (LLaVA's
``llava/eval/eval_pope.py`` reads the same way): only the first sentence is kept (the text before the first ``.``
when there is one), commas are deleted, the text is split on single spaces, and the answer is ``no`` when one of
the words is exactly ``No``, ``not`` or ``no``, else ``yes`` (so ``"NO"``, ``"Nope"``, ``"No."`` -> first
sentence ``"No"`` -> no; ``"There is no dog"`` -> no; ``"I cannot tell"`` -> yes; an empty answer -> yes; a
newline does not split words, ``"no\\nthere"`` is one word -> yes). ``yes_ratio`` is the share of PREDICTED yes.
Where ``evaluate.py`` would divide by zero (no predicted or no true yes) this gives 0, as lmms-eval does.

Both report per split (``category``: adversarial / popular / random in POPE's COCO files) and pooled over every
question (lmms-eval's ``pope`` task pools the three splits of its test set).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from mmpeft.eval.matching import check_same_ids

PARSINGS = ("lmms_eval", "official")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def official_label(text: str) -> str:
    """POPE ``evaluate.py``'s yes/no of a generated answer (module docstring)."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def lmms_eval_label(text: str) -> str:
    """lmms-eval's answer: the text lower-cased and stripped (anything but ``yes`` / ``no`` is neither)."""
    return text.lower().strip()


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def split_metrics(pairs: list[tuple[str, str]], parsing: str) -> dict[str, Any]:
    """The five metrics and confusion counts of ``[(answer label, gold 'yes'/'no'), ...]`` under ``parsing``."""
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    tn = sum(p == "no" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    yes = sum(g == "yes" for _, g in pairs) if parsing == "lmms_eval" else sum(p == "yes" for p, _ in pairs)
    return {"accuracy": _ratio(sum(p == g for p, g in pairs), len(pairs)), "precision": precision,
            "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall),
            "yes_ratio": _ratio(yes, len(pairs)), "TP": tp, "FP": fp, "TN": tn, "FN": fn,
            "num_questions": len(pairs)}


def pope_scores(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
                parsing: Literal["lmms_eval", "official"] = "lmms_eval") -> dict[str, Any]:
    """POPE metrics (fractions) of ``{question_id: generated text}`` against ``{question_id: {"answer": "yes" |
    "no", "category": split}}``.

    Returns:
        ``{"parsing", "num_questions", "accuracy", "precision", "recall", "f1", "yes_ratio", "TP", "FP", "TN",
        "FN"`` (pooled), ``"per_split": {split: the same}``, ``"per_question": {id as text: 0/1}}``.

    Raises:
        ValueError: an unknown ``parsing``, ids that differ, or a gold answer other than yes/no (the reference
            asserts it).
    """
    if parsing not in PARSINGS:
        raise ValueError(f"POPE parsing={parsing!r}; choose one of {PARSINGS}")
    check_same_ids(predictions, references, "question")
    label = official_label if parsing == "official" else lmms_eval_label
    pooled: list[tuple[str, str]] = []
    by_split: dict[str, list[tuple[str, str]]] = {}
    per_question: dict[str, float] = {}
    for qid, text in predictions.items():
        ref = references[qid]
        gold = str(ref.get("answer", "")).lower().strip()
        if gold not in ("yes", "no"):
            raise ValueError(f"POPE question {qid!r}: gold answer {ref.get('answer')!r} is not yes/no")
        pair = (label(text), gold)
        pooled.append(pair)
        by_split.setdefault(str(ref.get("category", "all")), []).append(pair)
        per_question[str(qid)] = float(pair[0] == gold)
    return {"parsing": parsing, **split_metrics(pooled, parsing),
            "per_split": {s: split_metrics(pairs, parsing) for s, pairs in sorted(by_split.items())},
            "per_question": per_question}
