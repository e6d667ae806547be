"""GQA exact-match accuracy, under either of the two normalisations in use: lmms-eval's (default) or the official
script's as LLaVA feeds it.

``lmms_eval`` -- EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3: ``gqa`` task
(``lmms_eval/tasks/gqa/gqa.yaml``: no ``process_results``, metric ``exact_match`` with ``ignore_case`` and
``ignore_punctuation``), scored by ``lmms_eval/api/task.py`` ``process_results`` (the generated text
``.strip()``-ed, the target ``doc["answer"]`` not) and ``lmms_eval/api/metrics.py`` ``exact_match_hf_evaluate``:
both sides lower-cased, then every character of Python's ``string.punctuation`` deleted (``np.char.translate``),
then compared with ``==``. Reported as ``exact_match``, the mean of 0/1 values: a FRACTION.
Quirks kept: inner whitespace is compared as is (``"two  dogs"`` != ``"two dogs"``); hyphens and apostrophes go
(``"t-shirt"`` meets ``"tshirt"``); no articles or number words are touched (``"a cat"`` != ``"cat"``,
``"2"`` != ``"two"``); the target is not stripped.

``official`` -- the GQA release's ``eval.py`` ("Evaluation code for GQA", gqadataset.org; the copy LLaVA's
``scripts/v1_5/eval/gqa.sh`` runs as ``eval/eval.py --tier testdev_balanced``; read in the copy vendored by
SHI-Labs/VCoder at 4e85acef896cee7843257d5d844ec945407efb13, ``playground/data/eval/gqa/data/eval/eval.py``, last
changed in 2f95684dddff603383b18d59dd7153481a98863e, and run on the test's cases), after haotian-liu/LLaVA at
c121f0432da27facab705978f83c4ada465e46fd ``llava/eval/model_vqa_loader.py`` (the answer ``.strip()``-ed) and
``scripts/convert_gqa_for_eval.py`` (``.rstrip('.').lower()``): ``eval.py`` compares ``predicted == gold`` with no
normalisation of its own, over ``isBalanced`` questions. Reported as eval.py prints: ``accuracy``, ``binary``
(structural type other than ``query``) and ``open`` (``query``), per structural and per semantic type, in PERCENT.
Quirks kept: only trailing periods go (``"yes."`` meets ``"yes"``, ``"yes!"`` does not); the gold answer is
compared exactly as the file gives it. One deliberate difference: a group with no question is ``None`` here (eval.py
averages an empty list to 0).

Both score the whole generated text (lmms-eval's llava model applies no stop strings; LLaVA keeps the whole decode).
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

from mmpeft.eval.matching import check_same_ids

NORMALIZATIONS = ("lmms_eval", "official")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def lmms_eval_normalize(text: str) -> str:
    """``exact_match_hf_evaluate(ignore_case=True, ignore_punctuation=True)`` on one string: lower-case, then
    delete ``string.punctuation``."""
    return text.lower().translate(_PUNCTUATION)


def gqa_match(prediction: str, answer: str, normalization: Literal["lmms_eval", "official"] = "lmms_eval") -> bool:
    """Whether ``prediction`` (the generated text) answers ``answer`` (GQA's gold) under ``normalization``."""
    if normalization == "lmms_eval":
        return lmms_eval_normalize(prediction.strip()) == lmms_eval_normalize(answer)
    if normalization == "official":
        return prediction.strip().rstrip(".").lower() == answer
    raise ValueError(f"GQA normalization={normalization!r}; choose one of {NORMALIZATIONS}")


def _mean(values: list[float], scale: float) -> float | None:
    return scale * sum(values) / len(values) if values else None


def gqa_accuracy(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
                 normalization: Literal["lmms_eval", "official"] = "lmms_eval") -> dict[str, Any]:
    """Score ``{question_id: generated text}`` against ``{question_id: {"answer": str, "structural_type": str,
    "semantic_type": str}}`` (types optional).

    Returns:
        ``exact_match`` (lmms_eval, a fraction) or ``accuracy`` (official, percent); in the same unit ``binary``,
        ``open`` (None without structural types), ``per_structural_type``, ``per_semantic_type``; and
        ``per_question`` (id -> 0/1), ``num_questions``, ``normalization``.

    Raises:
        ValueError: ids not in both, an unknown normalization, a non-string prediction or answer.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"GQA normalization={normalization!r}; choose one of {NORMALIZATIONS}")
    check_same_ids(predictions, references, "question")
    scale = 1.0 if normalization == "lmms_eval" else 100.0
    per_question: dict[str, float] = {}
    by_kind: dict[str, list[float]] = {"binary": [], "open": []}
    by_structural: dict[str, list[float]] = defaultdict(list)
    by_semantic: dict[str, list[float]] = defaultdict(list)
    for qid, ref in references.items():
        prediction, answer = predictions[qid], ref.get("answer")
        if not isinstance(prediction, str) or not isinstance(answer, str):
            raise ValueError(f"GQA question {qid!r}: prediction and 'answer' must be strings, not "
                             f"{type(prediction).__name__} and {type(answer).__name__}")
        score = per_question[str(qid)] = float(gqa_match(prediction, answer, normalization))
        structural = ref.get("structural_type")
        if structural:
            by_structural[structural].append(score)
            by_kind["open" if structural == "query" else "binary"].append(score)
        if ref.get("semantic_type"):
            by_semantic[ref["semantic_type"]].append(score)
    key = "exact_match" if normalization == "lmms_eval" else "accuracy"
    return {key: _mean(list(per_question.values()), scale),
            "binary": _mean(by_kind["binary"], scale), "open": _mean(by_kind["open"], scale),
            "per_structural_type": {t: _mean(v, scale) for t, v in sorted(by_structural.items())},
            "per_semantic_type": {t: _mean(v, scale) for t, v in sorted(by_semantic.items())},
            "per_question": per_question, "num_questions": len(per_question), "normalization": normalization}
