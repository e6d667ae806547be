"""Directories written atomically: a reader (or a crash) finds the previous complete directory or the new one.

``atomic_directory(path)`` yields a temporary sibling to fill; on success it replaces ``path``. Replacing a
directory takes two renames, so the exact guarantee, and the recovery that makes it hold across a crash between
them (``recover_directory``), are in their docstrings. Checkpoints and exports (``mmpeft.checkpoint``) and Lightning
checkpoints (``mmpeft.callbacks.checkpoint_io``) are written this way. Single files: ``mmpeft.atomic``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path``.

    The guarantee, for one writer of ``path`` at a time: whenever the process stops (an exception, a kill, a crash
    at any instruction), ``path`` as read through ``recover_directory`` (which every ``atomic_directory`` entry,
    ``load_pretrained`` and ``SafetensorsCheckpointIO.load_checkpoint`` call) is either the previous complete
    directory or the new complete one, never a partial one, and never missing if it existed before. Why the helper
    is needed: replacing a directory takes two renames (``path`` -> ``.<name>.old-<hex>``, then
    ``.<name>.tmp-<hex>`` -> ``path``); a crash between them leaves ``path`` absent on disk with the previous
    version, complete, under the ``.old-`` name, and ``recover_directory`` renames it back. An exception between
    them puts it back at once. Other leftovers (an incomplete ``.tmp-`` directory, an ``.old-`` one whose deletion
    was cut short) are removed by the next write. Files are fsynced before the swap; the parent directory is not,
    so after a power cut the guarantee rests on the filesystem keeping the two renames in order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path, clean=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, moving a present ``path`` aside first; the set-aside copy is deleted after."""
    set_aside: list[Path] = []
    try:
        for _ in range(3):
            if path.exists():
                set_aside.append(_sibling(path, "old"))
                os.rename(path, set_aside[-1])
            try:
                os.rename(tmp, path)
                break
            except OSError:
                if not path.exists():
                    raise
                # a reader's recover_directory put the previous version back between our two renames: again
        else:
            raise OSError(f"{path} kept reappearing while {tmp} was being renamed to it")
    except BaseException:
        if set_aside and set_aside[-1].exists() and not path.exists():
            os.rename(set_aside[-1], path)  # the previous version, back in place
        raise
    for old in set_aside:
        shutil.rmtree(old, ignore_errors=True)


def recover_directory(path: str | Path, *, clean: bool = False) -> Path:
    """Undo what a crash inside ``atomic_directory`` left at ``path``; returns the directory to read.

    When ``path`` is missing and one ``.<name>.old-<hex>`` sibling (the previous complete version, set aside by an
    interrupted write) is there, it is renamed back to ``path``. Where that rename is not permitted (a read-only
    directory), that sibling is returned to be read instead. ``clean`` (the writer, on entry): also remove the
    incomplete ``.<name>.tmp-<hex>`` siblings and, once ``path`` exists, stale ``.old-`` ones. Readers pass
    ``clean=False``: a ``.tmp-`` sibling may be a live writer's.

    Raises:
        FileNotFoundError: (readers) ``path`` is missing and several ``.old-`` siblings are there (left by an mmpeft
            without this recovery): which one is complete cannot be told, so none is guessed. A writer warns and
            writes the new version instead.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(old|tmp)-[0-9a-f]{{8}}")
    found = {"old": [], "tmp": []}
    if path.parent.is_dir():
        for entry in sorted(path.parent.iterdir()):
            if match := pattern.fullmatch(entry.name):
                found[match.group(1)].append(entry)
    olds = found["old"]
    if len(olds) > 1 and not path.exists() and clean:
        log.warning("%s is missing and %d earlier versions of it are beside it (%s): none is restored; the new "
                    "version replaces them", path, len(olds), ", ".join(o.name for o in olds))
    elif olds and not path.exists():
        if len(olds) > 1:
            raise FileNotFoundError(f"{path} is missing and {len(olds)} earlier versions of it are beside it "
                                    f"({', '.join(o.name for o in olds)}), left by interrupted writes: rename the "
                                    f"complete one to {path.name} and delete the others")
        try:
            os.rename(olds[0], path)
            log.warning("%s was missing (a write was interrupted between its two renames): restored the previous "
                        "version from %s", path, olds[0].name)
        except OSError as error:
            if not path.exists():
                log.warning("%s is missing and its previous version %s cannot be renamed back (%s): reading that",
                            path, olds[0], error)
                return olds[0]
        olds = []
    if clean:
        for leftover in found["tmp"] + (olds if path.exists() else []):
            log.info("removing %s, left by an interrupted write of %s", leftover.name, path)
            shutil.rmtree(leftover, ignore_errors=True)
    return path
