"""VQA accuracy exactly as the official VQAv2 scorer computes it (GT-Vision-Lab ``vqaEval.py``).

Per question, the prediction is normalised (newlines/tabs to spaces, strip, punctuation rule, lower-case, number
words to digits, articles dropped, contractions restored) and compared with each of the 10 annotator answers'
leave-one-out subsets: ``acc = min(#matches among the other 9 / 3, 1)``, averaged over the 10 subsets. Annotator
answers get the punctuation rule only, and only when they are not unanimous. Overall accuracy is the mean, in
percent, rounded to 2 decimals.

Reproduced quirks of the official scorer, so numbers match it:

- its per-question-type and per-answer-type figures average the accuracy of each question's *last* leave-one-out
  subset, not the 10-subset mean (``per_question_type``/``per_answer_type``); the 10-subset means are reported
  alongside as ``per_question_type_mean``/``per_answer_type_mean``;
- the period rule removes at most 32 periods (``re.sub``'s count receives ``re.UNICODE``);
- its contraction table writes curly apostrophes (``dont`` -> ``don’t``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmpeft.eval.matching import check_same_ids

_C = "\u2019"  # the scorer's contraction table uses a right single quotation mark in most entries
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": f"couldn{_C}t{_C}ve", f"couldnt{_C}ve": f"couldn{_C}t{_C}ve", "didnt": f"didn{_C}t",
    "doesnt": f"doesn{_C}t", "dont": f"don{_C}t", "hadnt": f"hadn{_C}t", f"hadnt{_C}ve": f"hadn{_C}t{_C}ve",
    "hadn'tve": f"hadn{_C}t{_C}ve", "hasnt": f"hasn{_C}t", "havent": f"haven{_C}t", "hed": f"he{_C}d",
    f"hed{_C}ve": f"he{_C}d{_C}ve", f"he{_C}dve": f"he{_C}d{_C}ve", "hes": f"he{_C}s", "howd": f"how{_C}d",
    "howll": f"how{_C}ll", "hows": f"how{_C}s", f"Id{_C}ve": f"I{_C}d{_C}ve", f"I{_C}dve": f"I{_C}d{_C}ve",
    "Im": f"I{_C}m", "Ive": f"I{_C}ve", "isnt": f"isn{_C}t", "itd": f"it{_C}d", f"itd{_C}ve": f"it{_C}d{_C}ve",
    f"it{_C}dve": f"it{_C}d{_C}ve", "itll": f"it{_C}ll", f"let{_C}s": f"let{_C}s", "maam": f"ma{_C}am",
    "mightnt": f"mightn{_C}t", f"mightnt{_C}ve": f"mightn{_C}t{_C}ve", f"mightn{_C}tve": f"mightn{_C}t{_C}ve",
    "mightve": f"might{_C}ve", "mustnt": f"mustn{_C}t", "mustve": f"must{_C}ve", "neednt": f"needn{_C}t",
    "notve": f"not{_C}ve", "oclock": f"o{_C}clock", "oughtnt": f"oughtn{_C}t",
    f"ow{_C}s{_C}at": f"{_C}ow{_C}s{_C}at", f"{_C}ows{_C}at": f"{_C}ow{_C}s{_C}at",
    f"{_C}ow{_C}sat": f"{_C}ow{_C}s{_C}at", "shant": f"shan{_C}t", f"shed{_C}ve": f"she{_C}d{_C}ve",
    f"she{_C}dve": f"she{_C}d{_C}ve", f"she{_C}s": f"she{_C}s", "shouldve": f"should{_C}ve",
    "shouldnt": f"shouldn{_C}t", f"shouldnt{_C}ve": f"shouldn{_C}t{_C}ve", f"shouldn{_C}tve": f"shouldn{_C}t{_C}ve",
    f"somebody{_C}d": "somebodyd", f"somebodyd{_C}ve": f"somebody{_C}d{_C}ve",
    f"somebody{_C}dve": f"somebody{_C}d{_C}ve", "somebodyll": f"somebody{_C}ll", "somebodys": f"somebody{_C}s",
    "someoned": f"someone{_C}d", f"someoned{_C}ve": f"someone{_C}d{_C}ve", f"someone{_C}dve": f"someone{_C}d{_C}ve",
    "someonell": f"someone{_C}ll", "someones": f"someone{_C}s", "somethingd": f"something{_C}d",
    f"somethingd{_C}ve": f"something{_C}d{_C}ve", f"something{_C}dve": f"something{_C}d{_C}ve",
    "somethingll": f"something{_C}ll", "thats": f"that{_C}s", "thered": f"there{_C}d",
    f"thered{_C}ve": f"there{_C}d{_C}ve", f"there{_C}dve": f"there{_C}d{_C}ve", "therere": f"there{_C}re",
    "theres": f"there{_C}s", "theyd": f"they{_C}d", f"theyd{_C}ve": f"they{_C}d{_C}ve",
    f"they{_C}dve": f"they{_C}d{_C}ve", "theyll": f"they{_C}ll", "theyre": f"they{_C}re", "theyve": f"they{_C}ve",
    "twas": f"{_C}twas", "wasnt": f"wasn{_C}t", f"wed{_C}ve": f"we{_C}d{_C}ve", f"we{_C}dve": f"we{_C}d{_C}ve",
    "weve": "we've", "werent": f"weren{_C}t", "whatll": f"what{_C}ll", "whatre": f"what{_C}re",
    "whats": f"what{_C}s", "whatve": f"what{_C}ve", "whens": f"when{_C}s", "whered": f"where{_C}d",
    "wheres": "where's", "whereve": f"where{_C}ve", "whod": f"who{_C}d", f"whod{_C}ve": f"who{_C}d{_C}ve",
    f"who{_C}dve": f"who{_C}d{_C}ve", "wholl": f"who{_C}ll", "whos": f"who{_C}s", "whove": "who've",
    "whyll": f"why{_C}ll", "whyre": f"why{_C}re", "whys": f"why{_C}s", "wont": f"won{_C}t",
    "wouldve": f"would{_C}ve", "wouldnt": f"wouldn{_C}t", f"wouldnt{_C}ve": f"wouldn{_C}t{_C}ve",
    f"wouldn{_C}tve": f"wouldn{_C}t{_C}ve", "yall": f"y{_C}all", f"yall{_C}ll": f"y{_C}all{_C}ll",
    f"y{_C}allll": f"y{_C}all{_C}ll", f"yall{_C}d{_C}ve": f"y{_C}all{_C}d{_C}ve",
    f"y{_C}alld{_C}ve": f"y{_C}all{_C}d{_C}ve", f"y{_C}all{_C}dve": f"y{_C}all{_C}d{_C}ve", "youd": f"you{_C}d",
    f"youd{_C}ve": f"you{_C}d{_C}ve", f"you{_C}dve": f"you{_C}d{_C}ve", "youll": f"you{_C}ll",
    "youre": f"you{_C}re", "youve": f"you{_C}ve",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the scorer's lookbehind is written as a lookahead
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    """The scorer's punctuation rule: a mark next to a space (or any text with a digit,digit comma) is deleted,
    otherwise it becomes a space; then periods not followed by a digit go (at most 32 of them)."""
    out = text
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """Lower-case, number words to digits, drop articles, restore contractions (the scorer's table)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """A prediction as the scorer compares it."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


@dataclass
class VQAResult:
    """Accuracies in percent (2 decimals, as the scorer prints them)."""

    overall: float
    per_question_type: dict[str, float]
    per_answer_type: dict[str, float]
    per_question_type_mean: dict[str, float]
    per_answer_type_mean: dict[str, float]
    per_question: dict[Any, float] = field(repr=False)
    num_questions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "num_questions": self.num_questions,
                "per_question_type": self.per_question_type, "per_answer_type": self.per_answer_type,
                "per_question_type_mean": self.per_question_type_mean,
                "per_answer_type_mean": self.per_answer_type_mean}


def question_accuracy(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """``(mean over the 10 leave-one-out subsets, accuracy of the last subset)`` for one question, in [0, 1]."""
    pred = normalize_answer(prediction)
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs), accs[-1]


def vqa_accuracy(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
                 digits: int = 2) -> VQAResult:
    """Score ``{question_id: answer}`` against ``{question_id: {"answers": [10 str], "question_type", "answer_type"}}``.

    Raises:
        ValueError: ids that are not in both, an empty prediction set, a reference without answers.
    """
    check_same_ids(predictions, references, "question")
    overall, per_question = [], {}
    by_qtype_last, by_atype_last = defaultdict(list), defaultdict(list)
    by_qtype_mean, by_atype_mean = defaultdict(list), defaultdict(list)
    for qid, ref in references.items():
        answers = ref.get("answers")
        if not answers:
            raise ValueError(f"question {qid!r} has no reference answers; VQA accuracy needs the annotators' answers")
        if not isinstance(predictions[qid], str):
            raise ValueError(f"prediction for question {qid!r} is {type(predictions[qid]).__name__}, not a string")
        mean, last = question_accuracy(predictions[qid], [str(a) for a in answers])
        overall.append(mean)
        per_question[qid] = round(100 * mean, digits)
        qtype, atype = ref.get("question_type", ""), ref.get("answer_type", "")
        by_qtype_last[qtype].append(last)
        by_atype_last[atype].append(last)
        by_qtype_mean[qtype].append(mean)
        by_atype_mean[atype].append(mean)

    def pct(values: list[float]) -> float:
        return round(100 * sum(values) / len(values), digits)

    return VQAResult(
        overall=pct(overall),
        per_question_type={k: pct(v) for k, v in by_qtype_last.items()},
        per_answer_type={k: pct(v) for k, v in by_atype_last.items()},
        per_question_type_mean={k: pct(v) for k, v in by_qtype_mean.items()},
        per_answer_type_mean={k: pct(v) for k, v in by_atype_mean.items()},
        per_question=per_question,
        num_questions=len(overall),
    )
