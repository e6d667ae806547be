"""TextVQA accuracy exactly as lmms-eval scores ``textvqa_val``: EvalAI's answer processor, then VQA's
leave-one-out accuracy, both sides always normalised.

Reference: EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3 (2026-08-06):
``lmms_eval/tasks/textvqa/utils.py`` (``textvqa_process_results``, ``textvqa_doc_to_text``),
``lmms_eval/tasks/_task_utils/vqa_eval_metric.py`` (``EvalAIAnswerProcessor``, itself copied from
facebookresearch/mmf c46b3b3 ``pythia/tasks/processors.py``), ``lmms_eval/api/metrics.py`` (``mean``).
Re-implemented from reading them.

What is shared with the official VQA scorer (``mmpeft.eval.vqa``, GT-Vision-Lab/VQA a013f00), and reused from it:
the marks and their order (``MARKS``), the contraction table, number words and articles (a comparison of the
two tables, entry for entry, found them equal at the commits above), and so ``process_digit_article``; the
per-mark "delete if next to a space in the input, else a space" rule.

Where the EvalAI processor differs, reproduced here (tests/test_benchmarks_textvqa_gqa_sqa.py holds each):

1. Both the prediction and every annotator answer are ALWAYS normalised: there is no unanimity shortcut, so
   ``"Yes"`` against ten ``"yes"`` scores 1 (0 in ``vqaEval.py``).
2. A first ``word_tokenize`` step: lower-case, delete every ``,`` and ``?``, turn ``'s`` into `` 's``, strip.
   Consequences: the digit-comma-digit "delete every mark" rule of the punctuation step can never fire (its
   commas are gone), so ``"1,000 x-ray"`` becomes ``"1000 x ray"`` (``"1000 xray"`` in ``vqaEval.py``); and
   ``"what's"`` becomes ``"what 's"`` while ``"whats"`` becomes ``"what's"`` through the table, so those two no
   longer meet.
3. ``\\d`` is Unicode (the processor's patterns are compiled without ``re.ASCII`` on Python 3): the period rule
   keeps a period before any Unicode digit (``"a.\\u0663"``), ``vqaEval.py`` (Python 2) only before ``0-9``.
   ``re.UNICODE`` is still passed as the period ``sub``'s ``count``: at most 32 periods go.
4. Per question, ``statistics.mean`` of the leave-one-out values (one rounding; ``vqaEval.py`` sums and divides).
   Overall: ``sum / len`` of the per-question values, a FRACTION in [0, 1] (lmms-eval's ``exact_match``), not a
   percentage.
5. The whole generated text is scored (lmms-eval passes ``result[0]`` whole; newlines and tabs become spaces).

Unchanged from the reference, on purpose: an empty answer list is refused here (lmms-eval scores 0 for a document
without ``answers``: a test set without annotations is not a score).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from mmpeft.eval.matching import check_same_ids
from mmpeft.eval.vqa import MARKS, process_digit_article

_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic, as in vqaEval.py; Unicode \d (module docstring, 3)
_DIGIT_COMMAS_DIGIT = re.compile(r"(?<=\d)(\,)+(?=\d)")
_MAX_PERIODS = int(re.UNICODE)  # passed where sub() takes its count, as in the reference


def word_tokenize(text: str) -> str:
    """EvalAI's first step: lower-case, delete ``,`` and ``?``, ``'s`` -> `` 's``, strip."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def process_punctuation(text: str) -> str:
    """EvalAI's punctuation rule: per mark (decided on the input text) delete it if it stands next to a space or the
    text holds digit-comma(s)-digit, else replace it by a space; then delete periods not before a (Unicode) digit,
    at most 32 of them."""
    delete_all = _DIGIT_COMMAS_DIGIT.search(text) is not None
    out = text
    for mark in MARKS:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def evalai_normalize(text: str) -> str:
    """``EvalAIAnswerProcessor.__call__``: word_tokenize, newlines/tabs to spaces, strip, punctuation, then
    number words, articles and contractions (``mmpeft.eval.vqa.process_digit_article``, the same tables)."""
    text = word_tokenize(text).replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's accuracy in [0, 1]: for each annotator, ``min(1, matches among the others / 3)``, averaged
    (``statistics.mean``); both sides through ``evalai_normalize``."""
    pred = evalai_normalize(prediction)
    gts = [evalai_normalize(a) for a in answers]
    return statistics.mean(min(1, float(sum(1 for j, a in enumerate(gts) if j != i and a == pred)) / 3)
                           for i in range(len(gts)))


def textvqa_accuracy(predictions: Mapping[Any, str], answers: Mapping[Any, Sequence[str]]) -> dict[str, Any]:
    """lmms-eval's TextVQA ``exact_match`` of ``{question_id: generated text}`` against ``{question_id:
    [annotator answers]}``: ``{"exact_match": fraction, "per_question": {id (str): fraction},
    "num_questions"}``.

    Raises:
        ValueError: ids not in both, a question without answers, a non-string prediction or answer.
    """
    check_same_ids(predictions, answers, "question")
    per_question: dict[str, float] = {}
    for qid, gts in answers.items():
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise ValueError(f"prediction for question {qid!r} is {type(prediction).__name__}, not a string")
        if isinstance(gts, str) or not gts or not all(isinstance(a, str) for a in gts):
            raise ValueError(f"question {qid!r}: answers must be a non-empty list of strings (one per annotator), "
                             f"not {gts!r}")
        per_question[str(qid)] = float(question_accuracy(prediction, gts))  # min(1, ...) can give int 1
    values = list(per_question.values())
    return {"exact_match": sum(values) / len(values), "per_question": per_question, "num_questions": len(values)}
