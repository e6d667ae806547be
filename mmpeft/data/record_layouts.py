"""Chat records as people store them -> schema records: the ``llava``, ``sharegpt`` and ``messages`` layouts.

A layout reads one record (a dict: a JSON object, a JSON Lines line, or a ``datasets`` row) after the source's
``columns`` mapping renamed its fields (``{"conversations": "dialog"}``: the layout's ``conversations`` is read from
the row's ``dialog``). It returns the schema record's fields and the record's images, in marker order, as
*references*: a path (relative to the source's ``image_root``), bytes, or a ``datasets`` image (``{"bytes",
"path"}``). Every problem is a ``SampleError`` with the converters' reasons, naming the record.

- ``llava``: ``{"id", "image"?, "conversations": [{"from", "value"}]}``, read exactly as ``data_prep/convert_llava.py``
  reads it (``mmpeft.data.llava_records``: LLaVA's marker placement, leading non-human turn dropped).
- ``sharegpt``: ``{"id"?, "conversations": [{"from": "human"|"gpt"|"system", "value"}], "system"?, "images"?}``
  (also ``user``/``assistant``; ``images``: a path or a list); markers stay where the text has them; a ``system``
  field becomes a leading system turn. Tool turns (``observation``, ``function_call``) are ``malformed_json``.
- ``messages`` (OpenAI chat): ``{"id"?, "messages": [{"role", "content"}], "images"?}`` or ``{"text": ...}``
  (plain text, as ``data_prep/convert_text.py``). ``content`` is a string or a list of parts: ``{"type": "text",
  "text"}``, ``{"type": "image_url", "image_url": {"url"} | url}``, ``{"type": "image", "image"?}`` (without
  ``image``: the next entry of the record's ``images``). Parts are joined with ``"\\n"`` and each image part
  becomes an ``<image>`` marker where it stands, so ``[image, text]`` reads ``"<image>\\nDescribe."``, the
  form LLaVA's placement gives. Role ``developer`` is read as ``system``; URLs may be local paths, ``file://``
  or ``data:`` (base64) URLs; ``http(s)`` images are never fetched (``missing_image``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from mmpeft.data.llava_records import ROLE_OF, llava_turns, record_id
from mmpeft.data.schema import IMAGE_MARKER, SampleError

LAYOUTS = ("llava", "sharegpt", "messages")
FIELDS = {
    "llava": ("id", "image", "conversations"),
    "sharegpt": ("id", "conversations", "system", "images"),
    "messages": ("id", "messages", "text", "images"),
}
"""The fields each layout reads: the keys a source's ``columns`` mapping may rename."""
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

ImageRef = Any  # a path string, bytes, or a datasets image dict {"bytes": ..., "path": ...}


def apply_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The row with ``columns`` (layout field -> row column) applied: each mapped field read from its column."""
    if not columns:
        return row
    view = {k: v for k, v in row.items() if k not in columns}
    for field, column in columns.items():
        if column in row:
            view[field] = row[column]
    return view


def read_layout(row: Any, layout: str, fallback_id: str, where: str,
                placement: str = "llava") -> tuple[dict[str, Any], list[ImageRef]]:
    """``(fields, images)``: ``fields`` has ``id``, ``conversations`` or ``text``, and ``eval``, ready for
    ``make_record``; ``images`` the record's image references in marker order. Raises ``SampleError``."""
    if not isinstance(row, dict):
        raise SampleError("malformed_json", f"record is a {type(row).__name__}, not an object", where)
    if layout == "llava":
        read = llava_turns(row, fallback_id, where, placement)
        return {"id": read.sample_id, "conversations": read.turns, "eval": read.eval_fields}, list(read.image_paths)
    sample_id, eval_fields = record_id(row, fallback_id, where)
    where = f"{where} id={row.get('id')!r}" if "id" in row else where
    if layout == "sharegpt":
        turns = _sharegpt_turns(row, where)
        images = _image_list(row.get("images"), where)
        return {"id": sample_id, "conversations": turns, "eval": eval_fields}, images
    if layout == "messages":
        if ("messages" in row and row["messages"] is not None) == ("text" in row and row["text"] is not None):
            raise SampleError("malformed_json", "a record needs exactly one of 'messages' and 'text'", where)
        if row.get("text") is not None:
            return {"id": sample_id, "text": row["text"], "eval": eval_fields}, []
        turns, images = _message_turns(row["messages"], _image_list(row.get("images"), where), where)
        return {"id": sample_id, "conversations": turns, "eval": eval_fields}, images
    raise ValueError(f"unknown layout {layout!r}; one of {LAYOUTS}")


def _sharegpt_turns(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    convs = row.get("conversations")
    if not isinstance(convs, list):
        raise SampleError("malformed_json", "record needs a 'conversations' list", where)
    turns = []
    system = row.get("system")
    if system is not None and system != "":
        if not isinstance(system, str):
            raise SampleError("malformed_json", f"'system' must be a string, not {type(system).__name__}", where)
        turns.append({"role": "system", "content": system})
    for turn in convs:
        if not isinstance(turn, dict) or turn.get("from") not in ROLE_OF or not isinstance(turn.get("value"), str):
            raise SampleError("malformed_json", f"turn {turn!r} needs 'from' in {sorted(ROLE_OF)} and a string "
                              "'value' (tool turns are not supported)", where)
        turns.append({"role": ROLE_OF[turn["from"]], "content": turn["value"]})
    return turns


def _message_turns(messages: Any, images: list[ImageRef], where: str) -> tuple[list[dict[str, str]], list[ImageRef]]:
    if not isinstance(messages, list):
        raise SampleError("malformed_json", "'messages' must be a list of {role, content}", where)
    pending = list(images)  # {"type": "image"} parts without their own image take these in order
    found: list[ImageRef] = []
    turns = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise SampleError("malformed_json", f"message {message!r} needs 'role' in {sorted(MESSAGE_ROLES)}", where)
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            pieces = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif kind in ("image_url", "image"):
                    ref = part.get(kind)
                    if isinstance(ref, dict) and kind == "image_url":
                        ref = ref.get("url")
                    if ref is None:
                        if not pending:
                            raise SampleError("image_marker", "an image part has no image and the record's "
                                              "'images' has none left", where)
                        ref = pending.pop(0)
                    found.append(ref)
                    pieces.append(IMAGE_MARKER)
                else:
                    raise SampleError("malformed_json", f"content part {part!r} must be text, image_url or image",
                                      where)
            text = "\n".join(pieces)
        else:
            raise SampleError("malformed_json", "message 'content' must be a string or a list of parts", where)
        turns.append({"role": MESSAGE_ROLES[message["role"]], "content": text})
    if pending and not found:  # string contents with <image> markers: the images come from 'images'
        found = pending
    elif pending:
        raise SampleError("image_marker", f"{len(pending)} image(s) in 'images' not used by any image part", where)
    return turns, found


def _image_list(value: Any, where: str) -> list[ImageRef]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)):
        value = [value]
    if not isinstance(value, list):
        raise SampleError("malformed_json", f"'images' must be a path or a list of images, not {value!r:.80}", where)
    return list(value)


def image_bytes(ref: ImageRef, where: str) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` for an image given inline (bytes, a ``data:`` URL, a datasets image with bytes), or
    ``(None, path)`` for one given by path. Raises ``SampleError`` for a remote URL or an unusable value."""
    if isinstance(ref, dict):
        if ref.get("bytes"):
            return bytes(ref["bytes"]), None
        ref = ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref), None
    if not isinstance(ref, str) or not ref:
        raise SampleError("malformed_json", f"image {ref!r:.80} is not a path, bytes or a datasets image", where)
    if ref.startswith("data:"):
        try:
            return base64.b64decode(ref.split(",", 1)[1], validate=True), None
        except (IndexError, binascii.Error) as e:
            raise SampleError("corrupt_image", f"data: URL is not base64 image data ({e})", where) from e
    if ref.startswith(("http://", "https://")):
        raise SampleError("missing_image", f"remote image {ref!r} is not fetched (mmpeft reads offline): download "
                          "it and give its path", where)
    return None, ref.removeprefix("file://")
