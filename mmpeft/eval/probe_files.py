"""Probe files: where a probe's file is, and its items, each checked.

A probe's ``path`` is the user's file when it exists (relative to the current directory, or absolute, ``~``
expanded), else a file of mmpeft's packaged probe sets, named relative to ``mmpeft/resources/probes``
(``v1/prose.txt``), or a file in mmpeft's cache named ``zoo:<tree>/<path>`` (``mmpeft.zoo.CACHE_TREES``, e.g. the
demo's ``zoo:demo-data/pydoc_probe.jsonl``): packaged eval configs (``mmpeft/configs/eval/``) name them so, and work
from any directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PACKAGED_PROBES = Path(__file__).resolve().parent.parent / "resources" / "probes"


def probe_path(path: str | Path) -> Path:
    """The file ``path`` names (module docstring). Raises ``FileNotFoundError`` naming both places looked in."""
    if str(path).startswith("zoo:"):  # a file in mmpeft's cache, e.g. zoo:demo-data/pydoc_probe.jsonl
        from mmpeft.zoo import resolve

        return Path(resolve(str(path)))
    own = Path(path).expanduser()
    if own.is_file():
        return own
    packaged = PACKAGED_PROBES / Path(path)
    if not Path(path).is_absolute() and ".." not in Path(path).parts and packaged.is_file():
        return packaged
    sets = sorted(p.relative_to(PACKAGED_PROBES).as_posix() for p in PACKAGED_PROBES.rglob("*") if p.is_file()
                  and p.suffix in (".jsonl", ".txt"))
    raise FileNotFoundError(f"probe file {path} not found (looked in {Path.cwd()} and among the packaged probe "
                            f"files: {', '.join(sets)})")


def read_jsonl(path: str | Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Lines of a JSONL probe file (``probe_path``), each checked for ``required`` fields and types; a bad line is
    reported with its file, line and id."""
    path = probe_path(path)
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from e
        where = f"{path}:{line_no} (id {item.get('id', '?')!r})" if isinstance(item, dict) else f"{path}:{line_no}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with fields {sorted(required)}")
        for name, kind in required.items():
            if name not in item or not isinstance(item[name], kind):
                raise ValueError(f"{where}: field {name!r} missing or not {getattr(kind, '__name__', kind)}; "
                                 f"this probe needs {sorted(required)}")
        items.append(item)
    if not items:
        raise ValueError(f"probe file {path} has no items")
    return items


def read_corpus(path: str | Path) -> list[str]:
    """The documents of a perplexity corpus: a ``.txt`` file's blank-line-separated blocks, else the ``text`` of
    each line of a JSONL file."""
    file = probe_path(path)
    if file.suffix == ".txt":
        texts = [t for t in file.read_text(encoding="utf-8").split("\n\n") if t.strip()]
        if not texts:
            raise ValueError(f"probe file {file} has no text")
        return texts
    return [item["text"] for item in read_jsonl(file, {"text": str})]
