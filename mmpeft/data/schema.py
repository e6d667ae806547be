"""The one sample schema shared by image and text-only rows, in shards and in memory.

A shard is a ``.tar`` of samples; a sample is ``{key}.json`` plus one file per image, ``{key}.img{i}.{ext}``
(webdataset groups files by the key before the first dot, so keys hold no dots). The JSON record::

    {
      "schema": 1,
      "id": "coco-caption-000123",            # unique within the dataset
      "source": "coco_captions",              # origin tag, used for mixing statistics and reports
      "images": ["img0.jpg"],                 # the image fields of this sample, in order (empty: text-only)
      "conversations": [                      # chat turns; "<image>" in a user turn marks where image i goes
        {"role": "user", "content": "<image>\\nDescribe the image."},
        {"role": "assistant", "content": "A cat on a mat."}
      ],
      "text": null,                           # instead of conversations: plain text, every token supervised
      "eval": {"captions": ["...", "..."]}    # optional evaluation fields (see EVAL_FIELDS)
    }

Exactly one of ``conversations`` / ``text`` is set. The number of ``<image>`` markers equals ``len(images)``, and
markers appear only in user turns. Turns follow the order LLaVA's ``preprocess_v1`` asserts (haotian-liu/LLaVA
``llava/train/train.py`` at c121f04): user, assistant, user, ... alternating from a user turn (it may end on a user
turn), with one optional leading ``system`` turn (an mmpeft extension: LLaVA's JSON has none). Anything else is
skipped as ``bad_turn_order``, so loaders count it instead of failing later inside a chat template.
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA_VERSION = 1
IMAGE_MARKER = "<image>"
ROLES = ("system", "user", "assistant")
EVAL_FIELDS = {
    "answers": "list of the (10) annotator answers, VQAv2 style",
    "question_id": "id of the question in its source",
    "question_type": "VQAv2 question type, e.g. 'what color is the'",
    "answer_type": "VQAv2 answer type: 'yes/no', 'number' or 'other'",
    "image_id": "id of the image in its source",
    "captions": "list of reference captions",
    "answer": "the gold answer: GQA's answer string, or ScienceQA's index into 'choices'",
    "choices": "ScienceQA: the answer options, in order (prompted as A., B., ...)",
    "structural_type": "GQA types.structural ('query' is an open question, the others binary)",
    "semantic_type": "GQA types.semantic ('attr', 'cat', 'global', 'obj', 'rel')",
    "hint": "ScienceQA: the problem's context text ('' when none)",
    "subject": "ScienceQA subject, e.g. 'natural science'",
    "grade": "ScienceQA grade, 'grade1' .. 'grade12'",
    "category": "POPE: the split (adversarial / popular / random); MME: the subtask ('existence', ..., "
                "'code_reasoning'); MMBench: the ability category. Their 'answer' is yes/no, Yes/No, the letter",
    "index": "MMBench: the TSV row index (question index + k * 1e6 for its k-th option rotation)",
    "options": "MMBench: {letter: option text} of the row's options, in this rotation",
    "l2_category": "MMBench: the L2 ability category (TSV column 'l2-category')",
    "split": "MMBench: the TSV's split column ('dev' / 'test')",
    "source_id": "the record's id exactly as its source file gave it (any JSON value: LLaVA ids are strings or "
                 "numbers); the top-level 'id' is its string form",
}
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


SKIP_REASONS = (
    "malformed_json", "schema_version", "bad_key", "empty_text", "no_assistant_turn", "image_marker",
    "missing_image", "corrupt_image", "no_answers", "too_long", "corrupt_shard", "image_too_large", "bad_turn_order",
    "no_prompt", "no_image",
)
"""Every reason a sample can be skipped for; skip counts are kept per reason. ``no_prompt`` (a plain-text record in
a set that generation prompts) and ``no_image`` (a record without images in a set the vision probe reads) are the
evaluation readers' own (``mmpeft.eval``)."""


class SampleError(ValueError):
    """A sample that cannot be used, with the reason (a short tag, used for skip counts) and where it came from."""

    def __init__(self, reason: str, message: str, where: str = ""):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; add it to SKIP_REASONS")
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def image_field(index: int, ext: str) -> str:
    """The tar field of image ``index``: ``img0.jpg``."""
    return f"img{index}.{ext.lower().lstrip('.')}"


def make_record(
    sample_id: str,
    source: str,
    conversations: list[dict[str, str]] | None = None,
    text: str | None = None,
    images: list[str] | None = None,
    eval_fields: dict[str, Any] | None = None,
    where: str = "",
) -> dict[str, Any]:
    """Build and validate a record (see module docstring); errors name ``where`` (default: the id)."""
    record = {
        "schema": SCHEMA_VERSION,
        "id": sample_id,
        "source": source,
        "images": list(images or []),
        "conversations": conversations,
        "text": text,
        "eval": dict(eval_fields or {}),
    }
    validate_record(record, where=where or sample_id)
    return record


def validate_record(record: Any, where: str = "") -> dict[str, Any]:
    """Check a record against the schema; raises ``SampleError`` naming ``where`` and the problem."""
    if not isinstance(record, dict):
        raise SampleError("malformed_json", f"record is a {type(record).__name__}, not an object", where)
    if record.get("schema") != SCHEMA_VERSION:
        raise SampleError("schema_version", f"schema {record.get('schema')!r}, this mmpeft reads {SCHEMA_VERSION}",
                          where)
    for field in ("id", "source"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise SampleError("malformed_json", f"'{field}' must be a non-empty string", where)
    images = record.get("images")
    if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
        raise SampleError("malformed_json", "'images' must be a list of field names", where)
    convs, text = record.get("conversations"), record.get("text")
    if (convs is None) == (text is None):
        raise SampleError("malformed_json", "exactly one of 'conversations' and 'text' must be set", where)
    if text is not None:
        if not isinstance(text, str):
            raise SampleError("malformed_json", f"'text' must be a string, not {type(text).__name__}", where)
        if not text.strip():
            raise SampleError("empty_text", "'text' is empty", where)
        markers = text.count(IMAGE_MARKER)
    else:
        if not isinstance(convs, list) or not convs:
            raise SampleError("malformed_json", "'conversations' must be a non-empty list of turns", where)
        for turn in convs:
            if (not isinstance(turn, dict) or turn.get("role") not in ROLES
                    or not isinstance(turn.get("content"), str)):
                raise SampleError("malformed_json", f"turn {turn!r} needs role in {ROLES} and string content", where)
        check_turn_order([t["role"] for t in convs], where)
        if not any(t["role"] == "assistant" and t["content"].strip() for t in convs):
            raise SampleError("no_assistant_turn", "conversation has no (non-empty) assistant turn to learn from",
                              where)
        markers = sum(t["content"].count(IMAGE_MARKER) for t in convs)
        if any(IMAGE_MARKER in t["content"] for t in convs if t["role"] != "user"):
            raise SampleError("image_marker", f"{IMAGE_MARKER} may only appear in user turns", where)
    if markers != len(images):
        raise SampleError("image_marker", f"{markers} {IMAGE_MARKER} marker(s) but {len(images)} image(s)", where)
    if not isinstance(record.get("eval", {}), dict):
        raise SampleError("malformed_json", "'eval' must be an object", where)
    return record


def check_turn_order(roles: list[str], where: str = "") -> None:
    """Roles must read ``[system] user assistant user assistant ...`` (see module docstring); else ``bad_turn_order``.

    LLaVA asserts ``role == roles[j % 2]`` over the turns after its optional dropped first turn; a trailing user
    turn passes there too (it is simply not learned from).
    """
    body = roles[1:] if roles[:1] == ["system"] else roles
    for j, role in enumerate(body):
        expected = "user" if j % 2 == 0 else "assistant"
        if role != expected:
            position = j + len(roles) - len(body)
            raise SampleError("bad_turn_order", f"turn {position} is '{role}' where '{expected}' belongs: turns must "
                              "be [system] user, assistant, user, ... alternating, from a user turn "
                              f"(roles here: {roles})", where)


def check_key(key: str, where: str = "") -> str:
    """Sample keys become tar file names before the first dot: letters, digits, ``_`` and ``-`` only."""
    if not _KEY.match(key):
        raise SampleError("bad_key", f"key {key!r} must match {_KEY.pattern} (no dots or slashes)", where)
    return key
