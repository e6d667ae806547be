"""MME yes/no benchmark: per-subtask accuracy and accuracy+, scores, and the perception / cognition totals.

``lmms_eval`` (default) -- EvolvingLMMs-Lab/lmms-eval at commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
``lmms_eval/tasks/mme/utils.py`` (``parse_pred_ans``, "brought from Otter", ``mme_process_results``,
``mme_aggregate_results``): the text is lower-cased, stripped and its periods deleted; ``yes`` / ``no`` as such;
a one-character answer is yes for ``y``, no for ``n``, else other; otherwise its first four characters decide:
``yes`` inside them -> yes, else ``no`` inside them -> no, else other (``"Nope"``, ``"not sure"``, ``"none"`` ->
no; ``"I think yes"`` -> other; ``"no, yes"`` -> no).

``official`` -- BradyFU/Awesome-Multimodal-Large-Language-Models, branch ``Evaluation`` at commit
dd2950902889cd614d4edf606827240166d29381, ``tools/eval_tool.zip`` -> ``eval_tool/calculation.py``
(``parse_pred_ans``, ``process_result``): the answer field is only lower-cased (not stripped, no period removed);
``yes`` / ``no`` as such, else the same four-character prefix rule, so ``"y"`` and ``"n"`` are other, and a
leading blank shifts the window (``" yes"`` -> yes, ``"  yes"`` -> other).

Both: a subtask's ``acc`` is the share of its questions answered right (``other`` is wrong) and ``acc_plus`` the
share of its images with BOTH questions right; its score is ``(acc + acc_plus) * 100`` (0..200), lmms-eval's
per-image mean of ``acc*100 + acc_plus*100`` being the same number; ``perception`` sums the scores of the ten
perception subtasks (max 2000), ``cognition`` of the four cognition subtasks (max 800), over the subtasks present.
Every image must carry exactly two questions (both references assert it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from mmpeft.eval.matching import check_same_ids

PARSINGS = ("lmms_eval", "official")
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def _prefix_label(text: str) -> str:
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def lmms_eval_label(text: str) -> str:
    """lmms-eval's (Otter's) ``parse_pred_ans``: ``yes`` / ``no`` / ``other``."""
    text = text.lower().strip().replace(".", "")
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    return _prefix_label(text)


def official_label(text: str) -> str:
    """``calculation.py``'s ``parse_pred_ans`` of the lower-cased answer: ``yes`` / ``no`` / ``other``."""
    return _prefix_label(text.lower())


def mme_scores(predictions: Mapping[Any, str], references: Mapping[Any, Mapping[str, Any]],
               parsing: Literal["lmms_eval", "official"] = "lmms_eval") -> dict[str, Any]:
    """MME scores of ``{question_id: generated text}`` against ``{question_id: {"answer": "Yes" | "No",
    "category": subtask, "image_id": the image the question's pair shares}}``.

    Returns:
        ``{"parsing", "perception", "cognition", "total", "num_questions", "other_answers",
        "per_category": {subtask: {"acc", "acc_plus" (percent), "score", "num_images", "other_answers"}},
        "per_question": {id as text: 0/1}}``.

    Raises:
        ValueError: an unknown ``parsing`` or subtask, ids that differ, a gold answer other than yes/no, or an image
            without exactly two questions.
    """
    if parsing not in PARSINGS:
        raise ValueError(f"MME parsing={parsing!r}; choose one of {PARSINGS}")
    check_same_ids(predictions, references, "question")
    label = official_label if parsing == "official" else lmms_eval_label
    images: dict[str, dict[str, list[float]]] = {}
    other: dict[str, int] = {}
    per_question: dict[str, float] = {}
    for qid, text in predictions.items():
        ref = references[qid]
        category, gold = ref.get("category"), str(ref.get("answer", "")).lower().strip().replace(".", "")
        if category not in PERCEPTION + COGNITION:
            raise ValueError(f"MME question {qid!r}: category {category!r} is none of MME's subtasks "
                             f"{PERCEPTION + COGNITION}")
        if gold not in ("yes", "no"):
            raise ValueError(f"MME question {qid!r}: gold answer {ref.get('answer')!r} is not yes/no")
        answer = label(text)
        per_question[str(qid)] = float(answer == gold)
        images.setdefault(category, {}).setdefault(str(ref.get("image_id")), []).append(per_question[str(qid)])
        other[category] = other.get(category, 0) + (answer == "other")
    per_category: dict[str, dict[str, Any]] = {}
    for category, by_image in images.items():
        odd = [i for i, s in by_image.items() if len(s) != 2]
        if odd:
            raise ValueError(f"MME {category}: image(s) {odd[:3]} have {len(by_image[odd[0]])} question(s); MME "
                             "scores pairs (two questions per image, check eval.image_id)")
        acc = sum(sum(s) for s in by_image.values()) / (2 * len(by_image))
        acc_plus = sum(sum(s) == 2 for s in by_image.values()) / len(by_image)
        per_category[category] = {"acc": 100 * acc, "acc_plus": 100 * acc_plus, "score": 100 * (acc + acc_plus),
                                  "num_images": len(by_image), "other_answers": other[category]}
    perception = sum(per_category[c]["score"] for c in PERCEPTION if c in per_category)
    cognition = sum(per_category[c]["score"] for c in COGNITION if c in per_category)
    return {"parsing": parsing, "perception": perception, "cognition": cognition, "total": perception + cognition,
            "num_questions": len(per_question), "other_answers": sum(other.values()),
            "per_category": {c: per_category[c] for c in PERCEPTION + COGNITION if c in per_category},
            "per_question": per_question}
