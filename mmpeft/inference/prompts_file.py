"""The prompts file of ``mmpeft generate``: one JSON object per line, read strictly, every bad line reported.

Each line holds exactly one of ``prompt``, ``messages`` or ``conversations``::

    {"id": "q1", "prompt": "Describe the picture.", "images": ["img/cat.jpg"]}
    {"id": "q2", "prompt": "Compare <image> with <image>.", "images": ["a.png", "b.png"]}
    {"id": "q3", "conversations": [{"role": "user", "content": "<image>\\nWhat is it?"},
                                   {"role": "assistant", "content": "A cat."},
                                   {"role": "user", "content": "What colour?"}], "images": ["cat.jpg"]}
    {"id": "q4", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "cat.jpg"}},
                                                           {"type": "text", "text": "What is it?"}]}]}

- ``id``: a string or integer, unique in the file; default: the line number.
- ``prompt``: one user turn. ``<image>`` markers place its ``images``; without markers the images go first, one
  ``<image>\\n`` each (LLaVA's placement).
- ``conversations``: mmpeft's schema turns (``mmpeft.data.schema``): [system] user, assistant, user, ...;
  ``<image>`` markers in user turns, one per entry of ``images``. Trailing assistant turns are dropped (a reference
  answer), as evaluation does.
- ``messages``: OpenAI-style turns; ``content`` is a string or a list of parts, ``{"type": "text", "text"}``,
  ``{"type": "image_url", "image_url": {"url"} | "url"}`` or ``{"type": "image", "image" | "url" | "path"}``.
  Parts are joined with ``\\n``, an image part becoming an ``<image>`` marker in place; no ``images`` key then.
- ``images``: local paths, relative to the prompts file's directory, ``file://`` or ``data:image/...;base64,`` URLs
  (never fetched from a network).
- ``system``: a system prompt for this row (default: the model's saved one, or ``--system-prompt``).
- ``meta``: any JSON, copied to the output row.

Blank lines are ignored. Every other line that cannot be used is a ``BadLine`` with its line number and reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmpeft.data.schema import IMAGE_MARKER, ROLES, SampleError, check_turn_order
from mmpeft.inference.conversation import place_images

KEYS = ("id", "prompt", "messages", "conversations", "images", "system", "meta")
PROMPT_KEYS = ("prompt", "messages", "conversations")


@dataclass
class PromptRow:
    """One usable line: schema turns ending in a user turn, and the image references of its markers in order."""

    line: int
    id: Any
    conversations: list[dict[str, str]]
    images: list[str] = field(default_factory=list)
    meta: Any = None


@dataclass
class BadLine:
    """A line that was not used: its 1-based number, a reason tag and what is wrong."""

    line: int
    reason: str
    message: str
    id: Any = None

    def __str__(self) -> str:
        return f"line {self.line}: [{self.reason}] {self.message}"


class LineError(ValueError):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def read_prompts(path: str | Path) -> tuple[list[PromptRow], list[BadLine]]:
    """Parse the prompts file at ``path`` (module docstring): the usable rows and the bad lines, in file order.

    Raises:
        OSError: the file cannot be read; ValueError: it is not UTF-8.
    """
    path = Path(path)
    rows: list[PromptRow] = []
    bad: list[BadLine] = []
    first_line_of: dict[Any, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); a prompts file is JSON lines") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row_id = None
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise LineError("malformed_json", f"a line must be a JSON object, not {type(record).__name__}")
            row_id = record.get("id", number)
            row = parse_row(record, number)
            if row.id in first_line_of:
                raise LineError("duplicate_id", f"id {row.id!r} was already used on line {first_line_of[row.id]}; "
                                "ids must be unique")
            first_line_of[row.id] = number
            rows.append(row)
        except json.JSONDecodeError as e:
            bad.append(BadLine(number, "malformed_json", f"not valid JSON ({e})"))
        except LineError as e:
            bad.append(BadLine(number, e.reason, str(e), row_id if _valid_id(row_id) else None))
        except SampleError as e:
            bad.append(BadLine(number, e.reason, str(e), row_id if _valid_id(row_id) else None))
    return rows, bad


def _valid_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def parse_row(record: dict[str, Any], line: int) -> PromptRow:
    """One JSON object -> ``PromptRow``; raises ``LineError`` / ``SampleError`` naming the problem."""
    unknown = sorted(set(record) - set(KEYS))
    if unknown:
        raise LineError("bad_field", f"unknown keys {unknown}; a line may hold {list(KEYS)}")
    row_id = record.get("id", line)
    if not _valid_id(row_id) or row_id == "":
        raise LineError("bad_field", f"'id' must be a non-empty string or an integer, not {row_id!r}")
    given = [k for k in PROMPT_KEYS if k in record]
    if len(given) != 1:
        raise LineError("bad_field", f"give exactly one of {list(PROMPT_KEYS)} (this line has {given})")
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
        raise LineError("bad_field", "'images' must be a list of image paths or URLs")
    if given[0] == "prompt":
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise LineError("bad_field", "'prompt' must be a non-empty string")
        convs = [{"role": "user", "content": place_images(prompt, len(images))}]
    elif given[0] == "conversations":
        convs = _schema_turns(record["conversations"], "conversations")
    else:
        if "images" in record:
            raise LineError("bad_field", "with 'messages', images are content parts of the turns, not an 'images' "
                            "list")
        convs, images = _openai_turns(record["messages"])
    system = record.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise LineError("bad_field", "'system' must be a string")
        if convs[0]["role"] == "system":
            raise LineError("bad_field", "'system' given, but the turns already start with a system turn")
        convs = [{"role": "system", "content": system}, *convs]
    _check_turns(convs, len(images))
    return PromptRow(line, row_id, convs, images, record.get("meta"))


def _schema_turns(turns: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise LineError("bad_field", f"'{key}' must be a non-empty list of turns")
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise LineError("bad_field", f"turn {str(turn)[:80]} needs a role in {ROLES} and string content")
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def _openai_turns(messages: Any) -> tuple[list[dict[str, str]], list[str]]:
    if not isinstance(messages, list) or not messages:
        raise LineError("bad_field", "'messages' must be a non-empty list of turns")
    turns, images = [], []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise LineError("bad_field", f"message {str(message)[:80]} needs a role in {ROLES}")
        content = message.get("content")
        if isinstance(content, list):
            pieces = []
            for part in content:
                reference = _image_part(part)
                if reference is None:
                    pieces.append(part["text"])
                else:
                    pieces.append(IMAGE_MARKER)
                    images.append(reference)
            content = "\n".join(pieces)
        if not isinstance(content, str):
            raise LineError("bad_field", f"message content must be a string or a list of parts, not {content!r:.80}")
        turns.append({"role": message["role"], "content": content})
    return turns, images


def _image_part(part: Any) -> str | None:
    """The image reference of an OpenAI/HF-style content part, None for a text part; else a LineError."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return None
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
    elif kind == "image":
        url = next((part[k] for k in ("image", "url", "path") if isinstance(part.get(k), str)), None)
    else:
        raise LineError("bad_field", f"content part {str(part)[:80]}: use type 'text' (with 'text'), 'image_url' or "
                        "'image'")
    if not isinstance(url, str) or not url:
        raise LineError("bad_field", f"image part {str(part)[:80]} names no image (image_url.url, image, url, path)")
    return url


def _check_turns(convs: list[dict[str, str]], num_images: int) -> None:
    check_turn_order([t["role"] for t in convs])
    while convs and convs[-1]["role"] == "assistant":  # a reference answer: not part of the prompt
        convs.pop()
    if not convs or convs[-1]["role"] != "user":
        raise LineError("no_prompt", "no user turn to answer")
    if any(IMAGE_MARKER in t["content"] for t in convs if t["role"] != "user"):
        raise SampleError("image_marker", f"{IMAGE_MARKER} may only appear in user turns")
    markers = sum(t["content"].count(IMAGE_MARKER) for t in convs)
    if markers != num_images:
        raise SampleError("image_marker", f"{markers} {IMAGE_MARKER} marker(s) but {num_images} image(s)")
