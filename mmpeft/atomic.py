"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a half-written one.

Each write goes to a temporary file in the target's directory (``<name>.<random>.tmp``, so ``os.replace`` is a
rename within one filesystem and two writers of the same target never share a temp file), is flushed and fsynced,
then replaces the target with ``os.replace``; the directory is fsynced last so the rename itself survives a power
cut. On any error the temp file is removed and the target is left as it was.

- ``write_bytes_atomic(path, data)``, ``write_text_atomic(path, text)``
- ``write_json_atomic(path, data, indent=2, sort_keys=False, default=None)``: ``json.dumps`` of ``data``
- ``save_figure_atomic(fig, path, **savefig_kwargs)``: a matplotlib figure, format from the path's suffix
- ``atomic_path(path)``: a context giving a temp path for writers that take a file name, not a file object
  (safetensors' ``save_file``, webdataset's ``TarWriter``); the file replaces ``path`` when the block ends

Several files that belong together (a checkpoint, a model directory) go through ``mmpeft.atomic_directory``
instead. Writes that stay outside both, each with its reason, are listed in ``tests/test_atomic_writers.py``.

The temp file is created with mode 0o666 less the umask, as ``open(path, "w")`` would, so the result has the
permissions a plain write gives (``tempfile`` would make it 0o600).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def temp_path(path: str | Path) -> Path:
    """A fresh temp name beside ``path``: ``<name>.<16 hex>.tmp`` (what a crashed write can leave behind)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Replace ``path`` atomically with what ``write(f)`` writes to a binary file object; returns ``path``.

    The parent directory must exist (else ``FileNotFoundError``, and nothing is written)."""
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """``json.dumps(data, indent=indent, sort_keys=sort_keys, default=default)`` written atomically. The text is
    made before the file is touched, so data that cannot be serialised leaves the old file in place."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=default))


def save_figure_atomic(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` into a temp file, then replace ``path``. The format is the path's suffix (``.png``,
    ``.pdf``, ``.svg``) unless ``format=`` is given: the temp name ends in ``.tmp``, which matplotlib cannot read a
    format from."""
    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or path.suffix.lstrip(".")
    if not fmt:
        raise ValueError(f"{path}: give the figure file a suffix (.png, .pdf, .svg) or pass format=")
    return write_atomic(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path`` for a writer that opens files by name; when the block ends without
    an error, the file written there is fsynced and replaces ``path`` (then the directory is fsynced). On an error,
    or if the block wrote no file, the temp file is removed, ``path`` is left as it was, and the error is raised.

    The file gets the permissions its writer gives it."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"nothing was written to {tmp}, the temporary file of {path}") from e
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Directories cannot be opened on Windows; there the rename is all we can do."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (e.g. certain network mounts) refuse fsync on a directory
    finally:
        os.close(fd)
