"""Tower arguments through which a saved config could make a library fetch or unpickle weights or code from a place
of its choosing: refused when the config comes from a file, unless the caller allows each key.

A model directory names its bases, and mmpeft reads their weights safely whatever the file says: safetensors, torch
files only with ``weights_only=True`` (``TimmVisionTower.checkpoint_path``, open_clip's ``pretrained``), LLMs through
transformers' ``from_pretrained``; the base fingerprints check that they are the bases the adapters were trained on.
Those arguments (``name``, ``pretrained``, ``checkpoint_path``, ``weights_file``, ``revision``) stay allowed.

Refused, because a library would read them with its own loaders and defaults (timm 1.0.15 to 1.0.25 unpickle with
``weights_only=False``: code execution) or fetch a second model the directory does not name as its base:

- ``TimmVisionTower.model_kwargs`` (passed to ``timm.create_model(**kwargs)``): the keys of ``WEIGHT_SOURCE_KEYS``
  (``timm.create_model``'s and ``build_model_with_cfg``'s weight arguments and timm ``PretrainedCfg``'s location
  fields, timm 1.0.31) at any depth, and any string value naming a location (a URL, a ``hf-hub:`` /
  ``local-dir:`` / ``timm:`` / ``file:`` source, an absolute or home path). Architecture kwargs pass.
- ``OpenClipVisionTower`` with ``name: "local-dir:DIR"``: ``DIR/open_clip_config.json`` is data too. Its
  ``model_cfg.vision_cfg.timm_model_name`` with a source prefix (open_clip calls ``timm.create_model`` on it, which
  fetches that repo's config), ``vision_cfg.timm_model_pretrained``, and ``text_cfg.hf_model_name`` (open_clip
  builds the text tower, which mmpeft discards, with transformers from that name).

The caller allows a key for one load by its full name as the error reports it: ``load_pretrained(directory,
allow_init_args=["vlm.vision.init_args.model_kwargs.checkpoint_path"])`` or ``--allow-init-arg KEY``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from mmpeft.towers.paths import LOCAL_DIR
from mmpeft.towers.timm_tower import TimmVisionTower
from mmpeft.towers.vision import OpenClipVisionTower

WEIGHT_SOURCE_KEYS = frozenset({
    # timm.create_model / build_model_with_cfg
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "pretrained_strict",
    "pretrained_filter_fn", "pretrained_model_args",
    # timm PretrainedCfg: where weights come from and how they are read
    "file", "url", "hf_hub_id", "hf_hub_filename", "hf_hub_revision", "state_dict", "source", "custom_load",
    # torch.load's switch, under any name a model constructor might forward
    "weights_only",
})
LOCATION_PREFIXES = ("hf-hub:", LOCAL_DIR, "timm:", "file:", "~")


def names_a_location(value: Any) -> bool:
    """True for a string that points somewhere: a URL, a source prefix, an absolute or home path."""
    return isinstance(value, str) and ("://" in value or value.startswith(LOCATION_PREFIXES) or os.path.isabs(value))


def weight_sources(cls: type, init_args: Mapping[str, Any], key: str) -> Iterator[tuple[str, str, Any, str]]:
    """``(allow name, where, value, why)`` for each argument of ``cls(**init_args)`` that picks a weight or code
    source besides the tower's own arguments (module docstring). ``key`` is the entry's name (``vlm.vision``)."""
    if issubclass(cls, TimmVisionTower) and isinstance(init_args.get("model_kwargs"), Mapping):
        prefix = f"{key}.init_args.model_kwargs"
        for path, value in _walk(init_args["model_kwargs"], prefix):
            last = path.rsplit(".", 1)[-1].split("[", 1)[0]
            if last in WEIGHT_SOURCE_KEYS:
                yield path, f"key {path}", value, "is passed to timm.create_model, which loads weights or their " \
                    "configuration from it with timm's own loaders (timm < 1.0.26 unpickles: code execution)"
            elif names_a_location(value):
                yield path, f"key {path}", value, "names a location, passed to timm.create_model"
    name = init_args.get("name")
    if issubclass(cls, OpenClipVisionTower) and isinstance(name, str) and name.startswith(LOCAL_DIR):
        file = Path(name.removeprefix(LOCAL_DIR)) / "open_clip_config.json"
        try:
            model_cfg = json.loads(file.read_text()).get("model_cfg")
        except (OSError, ValueError, AttributeError):
            return  # unreadable: open_clip reports it when the tower is built
        if not isinstance(model_cfg, Mapping):
            return
        vision, text = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
        vision, text = (v if isinstance(v, Mapping) else {} for v in (vision, text))
        allow = f"{key}.open_clip_config"
        timm_name = vision.get("timm_model_name")
        if isinstance(timm_name, str) and ":" in timm_name:
            yield (f"{allow}.vision_cfg.timm_model_name", f"{file}: key model_cfg.vision_cfg.timm_model_name",
                   timm_name, "makes timm fetch a model configuration from another source")
        if vision.get("timm_model_pretrained"):
            yield (f"{allow}.vision_cfg.timm_model_pretrained", f"{file}: key model_cfg.vision_cfg."
                   "timm_model_pretrained", True, "makes timm download pretrained weights")
        if text.get("hf_model_name") is not None:
            yield (f"{allow}.text_cfg.hf_model_name", f"{file}: key model_cfg.text_cfg.hf_model_name",
                   text["hf_model_name"], "makes open_clip load a transformers model (a text tower mmpeft discards)")


def refuse_weight_sources(cls: type, init_args: Mapping[str, Any], key: str, source: str,
                          allowed: Collection[str] = ()) -> None:
    """Raise ValueError for the first of ``weight_sources`` whose allow name is not in ``allowed``, naming the
    file, the key and how to allow it. ``source`` is the saved config's file."""
    for name, where, value, why in weight_sources(cls, init_args, key):
        if name in allowed:
            continue
        origin = "" if where.startswith("key ") else f" (read for {source}: key {key}.init_args.name)"
        file = f"{source}: " if where.startswith("key ") else ""
        raise ValueError(
            f"{file}{where} = {value!r} {why}{origin}. A model directory may not choose where a library loads "
            "weights or code from besides its towers' own arguments (name, pretrained, checkpoint_path, "
            "weights_file). Remove the key, or, if you trust this file, allow it for this load: "
            f"load_pretrained(directory, allow_init_args=[{name!r}]) in Python, or --allow-init-arg {name} on the "
            "mmpeft command line."
        )


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every ``(dotted path, value)`` inside nested objects and lists, the containers themselves included."""
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
