"""MMBench circular evaluation with VLMEvalKit's rule-based answer matching; no GPT judge is used.

Reference: open-compass/VLMEvalKit at commit e8e78f05f3080fe28154f2130321f17951c3be94,
``vlmeval/utils/matching_util.py`` (``can_infer_option``, ``can_infer_text``, ``can_infer``) and
``vlmeval/dataset/utils/multiple_choice.py`` (``build_choices``, ``prefetch_circular_group``,
``mcq_circular_eval``, ``report_acc``). lmms-eval (75571cf, ``lmms_eval/tasks/mmbench/mmbench_evals.py``) carries an
older copy of the same circular scheme.

Matching, reproduced: ``can_infer_option`` returns ``Z`` when the answer contains one of VLMEvalKit's refusal
sentences; else the characters ``.()[],:;!*#{}`` become blanks, the text is split on whitespace, and when exactly
one option letter is a token, that letter -- provided its first occurrence is among the last four tokens (so
``"A"`` and ``"B. dog"`` match, ``"B is right because of many things here"`` does not). No letter but a ``Z`` token
gives ``Z``. Then ``(correct )answer is **X**`` (any case) for a letter of the question. Failing those,
``can_infer_text``: when the answer (lower-cased) is at most twice the summed length of the options, the one
option whose lower-cased text is inside it. The ``"A" might be a quantifier`` rejection only runs with the
``VERBOSE`` environment variable set in VLMEvalKit; under its default it does not, and not here.

Circular evaluation: the rows of one question are its option rotations, ``index`` = ``g_index + k * 1e6`` (the
MMBench TSVs ship them). A question is right only when every rotation's inferred letter equals that rotation's
answer; a rotation matched to a wrong letter (``Z`` included) fails it at once. A question left with a rotation
that matching could not read is where VLMEvalKit would ask its GPT judge; here, as in VLMEvalKit's
``exact_matching`` mode (``model is None``), it scores 0, and ``judge_needed`` counts such questions (an upper
bound on what a judge could change). Accuracies are fractions over questions (``g_index``): overall, per
``category`` and per ``l2-category`` (``report_acc``'s groups; split by ``split`` when rows carry several).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmpeft.eval.matching import check_same_ids

ROTATION_STRIDE = 1_000_000
REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
            "I'm sorry, but without the image provided", "Cannot determine the answer")
_BLANKED = ".()[],:;!*#{}"
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer: str, choices: Mapping[str, Any]) -> str | None:
    """The option letter an answer names by letter (or ``Z``: a refusal), else None (module docstring)."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return "Z"
    blanked = answer
    for ch in _BLANKED:
        blanked = blanked.replace(ch, " ")
    tokens = blanked.split()
    named = [c for c in choices if c in tokens]
    if len(named) == 1:
        if tokens.index(named[0]) > len(tokens) - 5:
            return named[0]
    elif not named and "Z" in tokens:
        return "Z"
    match = _VERBOSE_ANSWER.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def can_infer_text(answer: str, choices: Mapping[str, Any]) -> str | None:
    """The one option whose text the (short enough) answer contains, else None."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    found = [k for k, v in choices.items() if str(v).lower() in answer]
    return found[0] if len(found) == 1 else None


def can_infer(answer: str, choices: Mapping[str, Any]) -> str | None:
    """VLMEvalKit's ``can_infer``: by letter, else by option text; None when neither reads it."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


def circular_hit(rotations: list[tuple[str, str, Mapping[str, Any]]]) -> tuple[int, bool]:
    """``(hit, judge_needed)`` of one question's rotations ``[(generated text, answer letter, options), ...]`` in
    ``index`` order: ``prefetch_circular_group`` without a judge."""
    inferred = []
    for text, answer, options in rotations:
        letter = can_infer(text, options)
        if letter is not None and letter != answer:
            return 0, False
        inferred.append(letter)
    return (1, False) if all(x is not None for x in inferred) else (0, True)


def _mean_by(hits: dict[int, int], groups: dict[int, str]) -> dict[str, float]:
    totals: dict[str, list[int]] = {}
    for g, hit in hits.items():
        totals.setdefault(groups[g], []).append(hit)
    return {name: sum(v) / len(v) for name, v in sorted(totals.items())}


def mmbench_scores(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]]) -> dict[str, Any]:
    """Circular MMBench accuracy of ``{row id: generated text}`` against ``{row id: {"index": int, "answer":
    letter, "options": {letter: text}, "category", "l2_category", "split"}}``.

    Returns:
        ``{"accuracy", "num_questions", "num_rows", "judge_needed", "judge": None, "per_category",
        "per_l2_category", "per_split" (when several), "per_question": {g_index as text: 0/1}}``.

    Raises:
        ValueError: ids that differ, a row without an integer index or with an answer that is not one of its
            options, or a question whose rotations lack the base row (``index < 1e6``).
    """
    check_same_ids(predictions, references, "row")
    groups: dict[int, list[tuple[int, Any]]] = {}
    for rid in predictions:
        ref = references[rid]
        index = ref.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"MMBench row {rid!r}: eval.index {index!r} must be a non-negative integer")
        if not isinstance(ref.get("options"), Mapping) or ref.get("answer") not in ref["options"]:
            raise ValueError(f"MMBench row {rid!r}: answer {ref.get('answer')!r} is not one of its options "
                             f"{sorted(ref.get('options') or {})}")
        groups.setdefault(index % ROTATION_STRIDE, []).append((index, rid))
    hits: dict[int, int] = {}
    judge_needed = 0
    for g, rows in sorted(groups.items()):
        if g not in (index for index, _ in rows):
            raise ValueError(f"MMBench question {g}: rotations {sorted(i for i, _ in rows)} without the base row "
                             f"(index {g}); VLMEvalKit scores a question from its base row")
        rows.sort()
        hits[g], judged = circular_hit([(predictions[r], references[r]["answer"], references[r]["options"])
                                        for _, r in rows])
        judge_needed += judged
    base = {g: references[next(r for i, r in groups[g] if i == g)] for g in groups}
    scores: dict[str, Any] = {
        "accuracy": sum(hits.values()) / len(hits), "num_questions": len(hits), "num_rows": len(predictions),
        "judge_needed": judge_needed, "judge": None,
        "per_category": _mean_by(hits, {g: str(base[g].get("category")) for g in hits}),
        "per_l2_category": _mean_by(hits, {g: str(base[g].get("l2_category")) for g in hits}),
    }
    splits = {g: str(base[g].get("split")) for g in hits}
    if len(set(splits.values())) > 1:
        scores["per_split"] = _mean_by(hits, splits)
    scores["per_question"] = {str(g): float(h) for g, h in hits.items()}
    return scores
