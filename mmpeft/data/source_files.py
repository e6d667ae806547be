"""The raw input files of the data_prep converters: whole-file JSON, JSON Lines, and their content fingerprints.

A JSON file that cannot be parsed is a whole-file error (``SystemExit`` naming ``file:line:col``): nothing in it can
be trusted. A JSON Lines file is a list of independent records, so one bad line is one counted skip
(``malformed_json`` at ``file:line:col``) and the rest of the file converts.

``file_fingerprint`` hashes the whole file (sha256, about 1.4 GB/s on the project machine), which costs far less
than parsing it; conversions record it so a resume only continues an output made from the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mmpeft.data.schema import SampleError


def load_json_file(path: str | Path, expected: str) -> Any:
    """Parse a whole JSON file; a missing, unreadable or invalid file exits with ``file:line:col`` and ``expected``.

    Args:
        path: the file.
        expected: what the file should be, for the message (e.g. "a JSON list of LLaVA records").
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SystemExit(f"{path}: cannot read it ({e.strerror or e}); expected {expected}") from e
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); expected {expected}") from e
    except UnicodeDecodeError as e:
        raise SystemExit(f"{path}: byte {e.start} is not UTF-8 ({e.reason}); expected {expected}") from e


def parse_json_line(line: bytes, path: str | Path, line_no: int) -> Any:
    """One JSON Lines record; a bad line raises ``SampleError('malformed_json')`` located at ``file:line:col``."""
    name = Path(path).name
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise SampleError("malformed_json", f"not valid JSON ({e.msg})", f"{name}:{line_no}:{e.colno}") from e
    except UnicodeDecodeError as e:
        raise SampleError("malformed_json", f"not UTF-8 ({e.reason})", f"{name}:{line_no}:{e.start + 1}") from e


def read_json_lines(path: str | Path) -> list[tuple[int, bytes]]:
    """``(line number from 1, raw bytes)`` of every non-blank line; decoding is per line (``parse_json_line``)."""
    try:
        with open(path, "rb") as f:
            return [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    except OSError as e:
        raise SystemExit(f"{path}: cannot read it ({e.strerror or e}); expected a JSON Lines file") from e


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file's content (its name and mtime are deliberately left out: a
    copied or touched input with the same bytes still resumes)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}
