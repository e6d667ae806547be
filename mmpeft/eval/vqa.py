"""VQA accuracy exactly as the official VQA scorer computes it today.

Reference: GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at commit
a013f0043c1e2cdc995922dfe257f7149aa9af06 (2021-03-11, "Fixed processing answers bug"; the file's latest commit).
Re-implemented from reading that file; the figures below are what it computes, quirks included.

Per question (``answers``: the annotators' answers, 10 in VQAv2; ``prediction``: the model's answer):

1. Both sides, always: ``"\\n"`` and ``"\\t"`` become spaces, then surrounding whitespace is stripped.
2. Unanimity is tested on those strings, exactly (case, punctuation and inner spaces count). When all annotator
   answers are the same string, NOTHING more is done on either side: the prediction must equal it verbatim
   (``"Yes"`` or ``"yes."`` against ten ``"yes"`` scores 0, ``"2"`` against ten ``"two"`` scores 0).
3. When they differ, BOTH the annotator answers and the prediction get :func:`process_punctuation` then
   :func:`process_digit_article`.
4. Leave-one-out: for each annotator, ``min(1, (other annotators equal to the prediction) / 3)``; the question's
   accuracy is the mean over annotators, a fraction in [0, 1]. The official drops "this annotator" by comparing
   answer records, which in VQAv2 carry a unique ``answer_id``, so exactly one is dropped: we drop by position.
5. Overall, per answer type and per question type: ``100 * sum / count`` of the per-question accuracies of those
   questions (a mean of per-question accuracies, in PERCENT, like the official), summed left to right in
   ``references`` order as Python 2's ``sum`` does (Python >= 3.12's ``sum`` compensates, which can move the last
   bit: seven questions at 0.9 give 90.00000000000001, not 90.0). Per question: ``100 * accuracy``.
   With ``digits=None`` (the default) these are the official's values before rounding, bit for bit.
6. Rounding (only with ``digits``, the official ``n``, which defaults to 2 there): every figure, each computed from
   unrounded accuracies, goes through Python 2's ``round`` -- half away from zero on the exact binary value, so
   ``6.25`` -> ``6.3`` at one digit where Python 3's ``round`` gives ``6.2``.

:func:`process_punctuation`, as the official writes it:

- Marks: ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``. Not the apostrophe, colon, ``& * # % $ ~ ^ |``.
- Per mark, one decision for the whole text, taken on the INPUT text (not the text as earlier marks left it): if
  the mark appears anywhere next to a space, or the text holds a comma between two digits anywhere, every
  occurrence is deleted; otherwise every occurrence becomes a space. One digit,digit comma therefore deletes all
  marks (``"1,000 x-ray"`` -> ``"1000 xray"``), and ``"x/-y-z"`` -> ``"x  y z"``, not ``"x yz"`` ('-' has no
  space beside it in the input, although '/' turning into a space puts one there).
- Then periods not followed by a digit are deleted (``"5."`` -> ``"5"``; ``"3.5"``, ``".5"`` and ``"a.5"`` stay):
  the regex's intended "not after a digit" is written ``(?!<=\\d)``, a lookahead that always holds at a period.
- ``re.UNICODE`` is passed as ``sub``'s positional ``count``, so at most 32 periods go; later ones stay.
- ``\\d`` is ASCII [0-9] (the official runs on Python 2 and compiles without ``re.UNICODE``): we use ``re.ASCII``.

:func:`process_digit_article`: lower-case, split on whitespace (runs of spaces collapse), number words ``none``
and ``zero`` .. ``ten`` become digits (so ``"none"`` -> ``"0"``), articles ``a an the`` are dropped, then each
remaining word goes through the contraction table. The table uses ASCII apostrophes (fixed 2016, commit 458a8b2;
the 2015 table wrote curly ones); its capitalised keys (``Im``, ``Ive``, ``Id've``, ``I'dve``) can never match
lower-cased words, and ``somebody'd`` maps to ``somebodyd`` (sic). The apostrophe survives punctuation, so
``"dont"`` -> ``"don't"`` meets ``"don't"``.

What the 2015 file (commit 14a5e12, which mmpeft used to follow) did differently: it always normalised the
prediction fully, and the annotator answers only with the punctuation rule, only when they differed, and without
the whitespace clean-up; its table had curly apostrophes. Unchanged since 2015: the marks and rules above, the
period regex and its count, and per-type figures as means of per-question accuracies.

mmpeft's own choices around the scorer: inputs are never mutated (the official rewrites its annotations in
place, so scoring a question twice normalises twice); ids must match on both sides (the official asserts it);
a missing ``question_type``/``answer_type`` is grouped under ``""`` (the official raises ``KeyError``); a
non-string prediction or answer, or a question without answers, is refused with its id named. Text functions are
Python 3's; the official ran on Python 2 unicode strings: identical for ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from mmpeft.eval.matching import check_same_ids

MARKS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# the official table, entry for entry (a test pins its size and its odd entries)
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)  # sic: a lookahead where a lookbehind was meant
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d", re.ASCII)
_MAX_PERIODS = int(re.UNICODE)  # the official passes re.UNICODE (32) where sub() takes its count


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip: done to every answer and prediction before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official punctuation rule (module docstring): per mark delete or space out, then drop periods."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in MARKS:
        # decided on the input text, on purpose: the official never looks at ``out`` here
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def process_digit_article(text: str) -> str:
    """Lower-case, split, number words to digits, drop articles, then the contraction table per word."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The full normalisation, which the official applies (to both sides) only when the annotators disagree."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's accuracy in [0, 1]: the leave-one-out mean over annotators (module docstring, steps 1-4)."""
    pred = clean_whitespace(prediction)
    gts = [clean_whitespace(a) for a in answers]
    if len(set(gts)) > 1:  # unanimous answers are compared verbatim, on both sides
        pred = process_digit_article(process_punctuation(pred))
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
    total = 0.0
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        total += min(1.0, matches / 3)
    return total / len(gts)


def round_like_python2(value: float, digits: int) -> float:
    """Python 2's ``round(value, digits)``: nearest multiple of 10**-digits, exact ties away from zero."""
    exact = Decimal(value)  # the float's exact binary value, as Python 2 rounds it
    # enough precision for any float at any digits (a float's exact decimal form has under 800 digits)
    return float(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP, context=Context(prec=1200)))


def _percent(accuracies: list[float]) -> float:
    total = 0.0
    for a in accuracies:  # left to right, as the official's Python 2 sum()
        total += a
    return 100 * total / len(accuracies)


@dataclass(frozen=True)
class VQAResult:
    """Accuracies in percent (0-100). Full precision unless ``digits`` says how they were rounded.

    ``per_answer_type`` / ``per_question_type``: the mean accuracy of that type's questions (official
    ``perAnswerType`` / ``perQuestionType``); ``per_question``: question id -> accuracy (official ``evalQA``).
    """

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[Any, float] = field(repr=False)
    num_questions: int
    digits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``overall``, ``per_answer_type``, ``per_question_type``, ``per_question`` (ids as strings,
        as JSON writes them anyway), ``num_questions``, ``digits`` (``None``: full precision)."""
        per_question = {str(k): v for k, v in self.per_question.items()}
        if len(per_question) != len(self.per_question):
            raise ValueError("question ids collide once written as strings (e.g. 1 and '1'); use one id type")
        return {"overall": self.overall, "per_answer_type": dict(self.per_answer_type),
                "per_question_type": dict(self.per_question_type), "per_question": per_question,
                "num_questions": self.num_questions, "digits": self.digits}


def vqa_accuracy(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
                 digits: int | None = None) -> VQAResult:
    """Score ``{question_id: answer}`` against ``{question_id: {"answers": [str, ...], "question_type": str,
    "answer_type": str}}`` as the official scorer does. ``digits``: round like the official ``n`` (None: don't).

    Raises:
        ValueError: ids that are not in both, no predictions, a question without answers, a non-string
            prediction or answer, a ``digits`` that is not an int.
    """
    check_same_ids(predictions, references, "question")
    if digits is not None and (isinstance(digits, bool) or not isinstance(digits, int)):
        raise ValueError(f"digits={digits!r}: pass an int (the official n, e.g. 2) or None for full precision")
    accuracy: dict[Any, float] = {}
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    for qid, ref in references.items():
        answers, prediction = ref.get("answers"), predictions[qid]
        if not answers:
            raise ValueError(f"question {qid!r} has no reference answers; VQA accuracy needs the annotators' answers")
        if not isinstance(prediction, str):
            raise ValueError(f"prediction for question {qid!r} is {type(prediction).__name__}, not a string")
        if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"question {qid!r}: 'answers' must be a list of strings (one per annotator)")
        acc = accuracy[qid] = question_accuracy(prediction, answers)
        by_answer_type.setdefault(ref.get("answer_type", ""), []).append(acc)
        by_question_type.setdefault(ref.get("question_type", ""), []).append(acc)

    def out(value: float) -> float:
        return value if digits is None else round_like_python2(value, digits)

    return VQAResult(
        overall=out(_percent(list(accuracy.values()))),
        per_answer_type={t: out(_percent(v)) for t, v in by_answer_type.items()},
        per_question_type={t: out(_percent(v)) for t, v in by_question_type.items()},
        per_question={q: out(100 * a) for q, a in accuracy.items()},
        num_questions=len(accuracy),
        digits=digits,
    )
