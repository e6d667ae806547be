"""Where a saved model's frozen bases are on this machine: local paths checked before anything is built, and moved
on request.

A checkpoint stores its bases' local paths absolute (``mmpeft.towers.paths``). Copied to another machine, or after
the bases moved, those paths no longer exist. ``check_base_paths`` then fails naming the file, the key and the fix
(instead of a transformers/open_clip traceback), and ``relocate_bases`` points the saved config at the bases' new
location for one load (``load_pretrained(dir, llm_path=..., vision_path=...)``, ``--llm-path`` / ``--vision-path``).
The base fingerprints are checked after the towers are built, as always: a relocated path must hold the same base.

What the paths replace:

    llm_path      vlm.llm.init_args.name (the directory written by save_pretrained)
    vision_path   the vision tower's local base: an open_clip ``local-dir:`` directory (init_args.name), else a timm
                  ``checkpoint_path`` file, else an open_clip ``pretrained`` file
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmpeft.towers.paths import LOCAL_DIR

FIX_FLAGS = {"llm": ("llm_path", "--llm-path"), "vision": ("vision_path", "--vision-path")}


def _local_base_key(args: dict[str, Any]) -> str | None:
    """Which vision init_arg holds the tower's local base, if any (module docstring)."""
    if isinstance(args.get("name"), str) and args["name"].startswith(LOCAL_DIR):
        return "name"
    if isinstance(args.get("checkpoint_path"), str) and not args["checkpoint_path"].startswith("zoo:"):
        return "checkpoint_path"
    if isinstance(args.get("pretrained"), str) and os.path.isabs(args["pretrained"]):
        return "pretrained"
    return None


def _init_args(cfg: dict[str, Any], tower: str) -> dict[str, Any] | None:
    entry = cfg.get(tower)
    args = entry.get("init_args") if isinstance(entry, dict) else None
    return args if isinstance(args, dict) else None  # malformed entries are reported by from_config


def relocate_bases(cfg: dict[str, Any], source: str, llm_path: str | None = None,
                   vision_path: str | None = None) -> dict[str, Any]:
    """A copy of the saved ``vlm`` config with the bases' local paths replaced by ``llm_path`` / ``vision_path``.

    Raises:
        ValueError when a given path does not exist or the tower has no local base to replace.
    """
    cfg = json.loads(json.dumps(cfg))
    for tower, new in (("llm", llm_path), ("vision", vision_path)):
        if new is None:
            continue
        option, flag = FIX_FLAGS[tower]
        if not os.path.exists(os.path.expanduser(new)):
            raise FileNotFoundError(f"{option} / {flag} {new} does not exist")
        new = os.path.abspath(os.path.expanduser(new))
        args = _init_args(cfg, tower)
        key = "name" if tower == "llm" else _local_base_key(args or {})
        if args is None or key is None or not isinstance(args.get(key), str):
            raise ValueError(f"{source}: {option} / {flag} given, but key vlm.{tower}.init_args has no local base "
                             f"path to replace ({args!r}); its weights come from a hub or registry name")
        args[key] = LOCAL_DIR + new if args[key].startswith(LOCAL_DIR) else new
    return cfg


def check_base_paths(cfg: dict[str, Any], source: str, export: bool = False) -> None:
    """Raise naming the file, the key and the fix when a tower's saved local path does not exist here.

    Args:
        export: the config is an export's (its paths are inside the export directory, resolved by the caller).
    """
    for tower in ("llm", "vision"):
        args = _init_args(cfg, tower)
        if args is None:
            continue
        keys = ["name"] if tower == "llm" else [k for k in ("name", "checkpoint_path", "pretrained", "weights_file")
                                                if k in ("weights_file", _local_base_key(args))]
        for key in keys:
            value = args.get(key)
            if not isinstance(value, str):
                continue
            path = value.removeprefix(LOCAL_DIR)
            if not os.path.isabs(path) or Path(path).exists():
                continue  # hub ids, registry names and tags are not local paths
            option, flag = FIX_FLAGS[tower]
            if export or key == "weights_file":
                fix = "the model directory is incomplete: copy it again from where it was written"
            else:
                fix = (f"if the base is elsewhere on this machine, point at it for this load: load_pretrained("
                       f"directory, {option}=...) in Python, or {flag} PATH on the mmpeft command line (the base "
                       "fingerprints still check that it is the same base)")
            raise ValueError(f"{source}: key vlm.{tower}.init_args.{key} = {value!r}: {path} does not exist on this "
                             f"machine (a checkpoint copied from another machine, or a base that moved); {fix}")
