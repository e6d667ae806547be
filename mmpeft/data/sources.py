"""``data.sources``: training data from several places and formats, mixed by weight.

Each entry of ``data.sources`` names one source::

    - name: llava            # unique; the row tag, and the share logged as data/share/<name>
      path: data/llava_v1_5_mix665k.json   # a file, a directory, or a list of them (shards: also globs)
      format: llava          # shards | llava | sharegpt | messages | hf (auto-detected where unambiguous)
      weight: 3              # relative sampling weight (> 0); shares are weight / sum of weights
      image_root: data       # image paths are relative to it (default: the directory of the first file)
      columns: {conversations: dialog, id: uid}   # layout field -> the file's column name
      repeat: false          # true: restart this source when it runs out (replay); false: its end ends the epoch
      layout: sharegpt       # hf only: how a row reads (llava | sharegpt | messages; default from its columns)
      split: train           # hf only: the split of a DatasetDict or of data files

``check_sources`` validates all of it without reading any data (the CLI runs it before the towers load); errors
name ``data.sources[i].<key>``. Auto-detection: a directory with ``manifest.json`` or ``.tar`` files, a ``.tar``
path or pattern, or a ``zoo:`` name is ``shards``; a ``datasets.save_to_disk`` directory, ``.parquet`` or
``.arrow`` files are ``hf``; JSON files say nothing about their layout, so they need ``format``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmpeft.data.llava_records import PLACEMENTS
from mmpeft.data.record_layouts import FIELDS, LAYOUTS

FORMATS = ("shards", *LAYOUTS, "hf")
KEYS = ("name", "path", "format", "weight", "columns", "image_root", "repeat", "layout", "split", "placement")
HF_DIR_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
HF_SUFFIXES = (".parquet", ".arrow")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class SourceSpec:
    """One validated ``data.sources`` entry (see module docstring); ``paths`` is always a list."""

    name: str
    paths: tuple[str, ...]
    format: str
    weight: float = 1.0
    columns: dict[str, str] = field(default_factory=dict)
    image_root: str | None = None
    repeat: bool = False
    layout: str | None = None
    split: str = "train"
    placement: str = "llava"


def detect_format(paths: list[str]) -> str | None:
    """The format the paths show unambiguously, or None."""
    first = paths[0]
    if first.startswith("zoo:") or first.endswith(".tar") or "{" in first:
        return "shards"
    p = Path(first)
    if p.is_dir():
        if (p / "manifest.json").exists() or any(p.glob("*.tar")):
            return "shards"
        if any((p / f).exists() for f in HF_DIR_FILES):
            return "hf"
        return None
    if p.suffix in HF_SUFFIXES:
        return "hf"
    return None


def check_sources(sources: Any) -> list[SourceSpec]:
    """Validate ``data.sources`` (no data read); raise ValueError naming ``data.sources[i].<key>`` and the fix."""
    if not isinstance(sources, list) or not sources:
        raise ValueError(f"data.sources={sources!r}: must be a non-empty list of sources ({{name, path, format, "
                         "weight, ...}}); see the README section 'Train from your data'")
    specs: list[SourceSpec] = []
    for i, entry in enumerate(sources):
        at = f"data.sources[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}={entry!r}: each source is a mapping with name, path, format, weight, ...")
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {unknown}; a source takes {list(KEYS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{at}.name={name!r}: give each source a name of letters, digits, '_' and '-'")
        if name in {s.name for s in specs}:
            raise ValueError(f"{at}.name={name!r}: another source has this name; names must be unique")
        specs.append(_check_one(entry, at, name))
    return specs


def _check_one(entry: dict[str, Any], at: str, name: str) -> SourceSpec:
    path = entry.get("path")
    paths = [path] if isinstance(path, str) else path
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"{at}.path={path!r}: give a file, a directory, or a list of them")
    fmt = entry.get("format") or detect_format(paths)
    if fmt is None:
        raise ValueError(f"{at}.format is not set and {paths[0]!r} does not show it: set format to one of "
                         f"{list(FORMATS)} (JSON files: llava, sharegpt or messages; through datasets: hf)")
    if fmt not in FORMATS:
        raise ValueError(f"{at}.format={fmt!r}: must be one of {list(FORMATS)}")
    if fmt != "shards":
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise ValueError(f"{at}.path: {missing[0]!r} does not exist")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or weight == float("inf"):
        raise ValueError(f"{at}.weight={weight!r}: must be a number > 0 (relative sampling weight)")
    repeat = entry.get("repeat", False)
    if not isinstance(repeat, bool):
        raise ValueError(f"{at}.repeat={repeat!r}: must be true or false")
    layout = entry.get("layout")
    if layout is not None and (fmt != "hf" or layout not in LAYOUTS):
        raise ValueError(f"{at}.layout={layout!r}: only for format hf, one of {list(LAYOUTS)}")
    columns = entry.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in columns.items()):
        raise ValueError(f"{at}.columns={columns!r}: a mapping of field -> column name (strings)")
    if columns and fmt == "shards":
        raise ValueError(f"{at}.columns: shards are in mmpeft's schema already; remove columns")
    allowed = FIELDS.get(layout or fmt) or sorted({f for fs in FIELDS.values() for f in fs})
    bad = sorted(set(columns) - set(allowed))
    if bad:
        raise ValueError(f"{at}.columns: {bad} are not fields of the {layout or fmt} layout; it reads {list(allowed)}")
    image_root = entry.get("image_root")
    if image_root is not None and (not isinstance(image_root, str) or not Path(image_root).is_dir()):
        raise ValueError(f"{at}.image_root={image_root!r}: must be an existing directory")
    split = entry.get("split", "train")
    if not isinstance(split, str) or not split:
        raise ValueError(f"{at}.split={split!r}: must be a split name, e.g. train")
    placement = entry.get("placement", "llava")
    if placement not in PLACEMENTS:
        raise ValueError(f"{at}.placement={placement!r}: one of {list(PLACEMENTS)} (llava layout: where <image> "
                         "goes)")
    return SourceSpec(name=name, paths=tuple(paths), format=fmt, weight=float(weight), columns=dict(columns),
                      image_root=image_root, repeat=repeat, layout=layout, split=split, placement=placement)
