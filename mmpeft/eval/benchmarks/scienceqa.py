"""ScienceQA(-IMG) multiple-choice accuracy: the option letter read from the generated text as lmms-eval reads it
(default) or as LLaVA's ``eval_science_qa.py`` does.

``lmms_eval`` -- EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
``lmms_eval/tasks/scienceqa/utils.py`` ``sqa_process_results`` (task ``scienceqa_img``): the text is stripped; it is
correct when, lower-cased, it equals the target letter lower-cased, or when it starts with an upper-case character
and a period and that character lower-cased is the target. Reported as ``exact_match``, a FRACTION.
Quirks kept: ``"a"`` and ``" A "`` are right for A; ``"A."`` and ``"A. 25 feet"`` are right, ``"a."``, ``"(A)"``,
``"A)"``, ``"A 25 feet"`` and ``"The answer is A."`` are wrong; the letter is not checked against the number of
choices (only equality with the target counts).

``llava`` -- haotian-liu/LLaVA at commit c121f0432da27facab705978f83c4ada465e46fd, ``llava/eval/eval_science_qa.py``
(which ``scripts/v1_5/eval/sqa.sh`` runs; LLaVA strips the decode in ``llava/eval/model_vqa_science.py``): the
letter is the whole text when it is one of ``A``..``E``; else its first character when that is one of them and is
followed by ``". "``; else the one match of ``The answer is ([A-Z]).`` (the ``.`` is any character; zero or several
matches fail); the letter must name one of the problem's choices (``options[:len(choices)]``), else the answer is
``-1``, wrong. Reported as eval_science_qa.py does: ``accuracy`` in PERCENT. Quirks kept: ``"A."`` fails (no
space after the period), ``"a"`` fails, ``"The answer is A"`` fails (nothing after the letter for the ``.``),
``"E"`` on a four-choice problem fails. lupantech/ScienceQA at 2cbf8318e07b9ece895bb2ae605e71e38d623264
``models/run_gpt3.py`` reads the same regex but picks a random choice on failure; LLaVA's ``get_pred_idx``
returns -1 before its (dead) random fallback, which is what is followed here: no randomness in a score.

Breakdowns (``per_subject``, ``per_grade_band``, ``has_text`` / ``no_text``) follow lupantech/ScienceQA
``tools/evaluate_acc.py`` (subject; grades 1-6 vs 7-12; ``has_text`` = a non-empty hint), in the mode's unit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

from mmpeft.eval.matching import check_same_ids

EXTRACTIONS = ("lmms_eval", "llava")
LLAVA_OPTIONS = ("A", "B", "C", "D", "E")
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def option_letter(index: int) -> str:
    """The letter of choice ``index`` (``chr(ord("A") + index)``, as both references write it)."""
    return chr(ord("A") + index)


def lmms_eval_correct(prediction: str, target_index: int) -> bool:
    """``sqa_process_results``: whether the generated text picks choice ``target_index``."""
    target = option_letter(target_index).strip().lower()
    pred = prediction.strip()
    if pred.lower() == target:
        return True
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return pred[0].lower() == target
    return False


def llava_parse(prediction: str) -> str:
    """The letter LLaVA's ``eval_science_qa.py`` reads from a (stripped) answer, or ``"FAILED"``."""
    if prediction in LLAVA_OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in LLAVA_OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    found = _THE_ANSWER_IS.findall(prediction)
    return found[0] if len(found) == 1 else "FAILED"


def llava_choice_index(prediction: str, num_choices: int) -> int:
    """``get_pred_idx(parsed, choices, options)``: the chosen index, or -1 (a failed parse or a letter past the
    problem's choices)."""
    letter = llava_parse(prediction.strip())
    options = LLAVA_OPTIONS[:num_choices]
    return options.index(letter) if letter in options else -1


def sqa_correct(prediction: str, answer: int, num_choices: int,
                extraction: Literal["lmms_eval", "llava"] = "lmms_eval") -> bool:
    """Whether ``prediction`` picks choice ``answer`` of ``num_choices`` under ``extraction``."""
    if extraction == "lmms_eval":
        return lmms_eval_correct(prediction, answer)
    if extraction == "llava":
        return llava_choice_index(prediction, num_choices) == answer
    raise ValueError(f"ScienceQA extraction={extraction!r}; choose one of {EXTRACTIONS}")


def _grade_band(grade: Any) -> str | None:
    number = re.fullmatch(r"grade(\d+)", grade) if isinstance(grade, str) else None
    if number is None:
        return None
    return "grade_1_6" if int(number.group(1)) <= 6 else "grade_7_12"


def sqa_accuracy(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
                 extraction: Literal["lmms_eval", "llava"] = "lmms_eval") -> dict[str, Any]:
    """Score ``{pid: generated text}`` against ``{pid: {"answer": int, "choices": [str, ...], "subject", "grade",
    "hint"}}`` (the last three optional, for breakdowns).

    Returns:
        ``exact_match`` (lmms_eval, a fraction) or ``accuracy`` (llava, percent); in the same unit
        ``per_subject``, ``per_grade_band``, ``has_text`` / ``no_text`` (hint or none); ``per_question`` (pid -> 0/1),
        ``num_questions``, ``extraction``.

    Raises:
        ValueError: ids not in both, an unknown extraction, an answer that is not an index into the choices.
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"ScienceQA extraction={extraction!r}; choose one of {EXTRACTIONS}")
    check_same_ids(predictions, references, "problem")
    scale = 1.0 if extraction == "lmms_eval" else 100.0
    per_question: dict[str, float] = {}
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for pid, ref in references.items():
        prediction, answer, choices = predictions[pid], ref.get("answer"), ref.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"ScienceQA problem {pid!r}: 'choices' must be a non-empty list, not {choices!r}")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise ValueError(f"ScienceQA problem {pid!r}: 'answer' must index its {len(choices)} choices, not "
                             f"{answer!r}")
        if not isinstance(prediction, str):
            raise ValueError(f"prediction for problem {pid!r} is {type(prediction).__name__}, not a string")
        score = per_question[str(pid)] = float(sqa_correct(prediction, answer, len(choices), extraction))
        if isinstance(ref.get("subject"), str):
            groups["per_subject"][ref["subject"]].append(score)
        band = _grade_band(ref.get("grade"))
        if band:
            groups["per_grade_band"][band].append(score)
        if "hint" in ref:
            groups["context"]["has_text" if ref["hint"] else "no_text"].append(score)
    values = list(per_question.values())
    key = "exact_match" if extraction == "lmms_eval" else "accuracy"
    out: dict[str, Any] = {key: scale * sum(values) / len(values)}
    for name in ("per_subject", "per_grade_band"):
        out[name] = {k: scale * sum(v) / len(v) for k, v in sorted(groups[name].items())}
    out.update({k: scale * sum(v) / len(v) for k, v in groups["context"].items()})
    return {**out, "per_question": per_question, "num_questions": len(values), "extraction": extraction}
