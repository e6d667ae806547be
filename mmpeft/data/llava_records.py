"""LLaVA conversation records -> schema turns, as LLaVA's training reads them (shared by ``data_prep/convert_llava.py``
and the ``llava`` training source, so shards and direct reads give the same rows).

A record is ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value": ...}]}``. What LLaVA does with it
(haotian-liu/LLaVA ``llava/train/train.py`` at c121f0432da27facab705978f83c4ada465e46fd: ``preprocess_multimodal``,
``preprocess_v1``), and so what this module does, is documented in ``data_prep/convert_llava.py``: the ``<image>``
marker moved to the start of its turn (``place_marker``), a leading non-human turn dropped, ``str(id)`` stored with
the original id in ``eval.source_id``. Every problem is a ``SampleError`` naming file, index and id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmpeft.data.schema import IMAGE_MARKER, SampleError

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PLACEMENTS = ("llava", "original")


@dataclass
class LlavaTurns:
    """One LLaVA record read: the stored id, eval fields, image paths (as written), schema turns, and what changed."""

    sample_id: str
    eval_fields: dict[str, Any]
    image_paths: list[str]
    turns: list[dict[str, str]]
    changes: tuple[str, ...]


def place_marker(text: str, several_images: bool) -> str:
    """One turn's text with ``<image>`` where LLaVA's ``preprocess_multimodal`` puts it (convert_llava's docstring)."""
    count = text.count(IMAGE_MARKER)
    if count == 0:
        return text
    if several_images and (count > 1 or text.startswith(IMAGE_MARKER)):  # LLaVA-NeXT leaves these as they are
        return text
    rest = text.replace(IMAGE_MARKER, "").strip()
    return (IMAGE_MARKER + "\n" + rest).strip()


def record_id(rec: dict[str, Any], fallback: str, where: str) -> tuple[str, dict[str, Any]]:
    """``(stored id, eval fields)``: ``str(id)`` for a non-empty string or a number, else (no id, null, a bool, an
    object, a list, "") ``fallback``; the original JSON value, whatever its type, kept as ``{"source_id": id}``.
    LLaVA itself never reads ``id``, so no record is dropped for it."""
    if "id" not in rec:
        return fallback, {}
    value = rec["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return fallback, {"source_id": value}
    return str(value), {"source_id": value}


def image_paths(rec: dict[str, Any], where: str, key: str = "image") -> tuple[list[str], bool]:
    """``(paths, given as a list)`` of a record's ``image`` field (absent or null: none)."""
    value = rec.get(key)
    if value is None:
        return [], False
    if isinstance(value, str) and value:
        return [value], False
    if isinstance(value, list) and all(isinstance(p, str) and p for p in value):
        return list(value), True
    raise SampleError("malformed_json", f"'{key}' must be a path or a list of paths, not {value!r}", where)


def llava_turns(rec: Any, fallback_id: str, where: str, placement: str = "llava") -> LlavaTurns:
    """Read one LLaVA record (``where``: ``file[index]``, extended with the id). Raises ``SampleError``."""
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        raise SampleError("malformed_json", "record needs a 'conversations' list", where)
    where = f"{where} id={rec.get('id')!r}"
    sample_id, eval_fields = record_id(rec, fallback_id, where)
    paths, several = image_paths(rec, where)
    changes = []
    turns = []
    for turn in rec["conversations"]:
        if not isinstance(turn, dict) or turn.get("from") not in ROLE_OF or not isinstance(turn.get("value"), str):
            raise SampleError("malformed_json", f"turn {turn!r} needs 'from' in {sorted(ROLE_OF)} and a string "
                              "'value'", where)
        text = turn["value"]
        if paths and placement == "llava":
            text = place_marker(text, several)
        turns.append({"role": ROLE_OF[turn["from"]], "content": text})
    if any(t["content"] != turn["value"] for t, turn in zip(turns, rec["conversations"])):
        changes.append("image_marker_moved")
    if turns and turns[0]["role"] == "assistant":  # preprocess_v1: "Skip the first one if it is not from human"
        turns = turns[1:]
        changes.append("leading_assistant_turn_dropped")
    if paths and not any(IMAGE_MARKER in t["content"] for t in turns):
        raise SampleError("image_marker", f"record has {len(paths)} image(s) but no {IMAGE_MARKER} marker; LLaVA "
                          "would train on its text with the image unseen; put the marker in the human turn that "
                          "shows the image", where)
    return LlavaTurns(sample_id, eval_fields, paths, turns, tuple(changes))
