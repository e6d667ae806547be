"""Where a ``--config NAME`` file comes from: the user's own file, else one of mmpeft's packaged presets.

The presets ship inside the package (``mmpeft/configs/<group>/<name>.yaml``: trainer, model, peft, data, guard,
experiments), so ``mmpeft fit --config model/tiny.yaml`` works from any directory. The rules, in order:

1. ``NAME`` is an existing file (relative to the current directory, or absolute, ``~`` expanded): that file. A
   user's own ``model/tiny.yaml`` therefore wins over the packaged one.
2. ``NAME`` is a packaged preset, written ``model/tiny.yaml`` or, as before the presets moved into the package,
   ``configs/model/tiny.yaml``: the packaged file.
3. ``NAME`` is an inline YAML/JSON mapping (``--config '{trainer: {max_steps: 5}}'``, which jsonargparse accepts):
   unchanged.
4. Anything else: ``FileNotFoundError`` listing the packaged presets.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import yaml

PACKAGED_DIR = Path(__file__).parent / "configs"
OLD_PREFIX = "configs/"  # the presets' directory in a source checkout before they moved into the package
CONFIG_OPTIONS = ("--config", "-c")  # LightningCLI's ActionConfigFile


def packaged_configs() -> list[str]:
    """Names of the packaged presets, as ``--config`` takes them: ``["data/llava_mix665k.yaml", ...]``."""
    return sorted(p.relative_to(PACKAGED_DIR).as_posix() for p in PACKAGED_DIR.rglob("*.yaml"))


def resolve_config(name: str | Path) -> Path:
    """The file ``--config name`` means (rules 1, 2 and 4 of the module docstring).

    Raises:
        FileNotFoundError: ``name`` is neither a file nor a packaged preset; the message lists the presets.
    """
    own = Path(name).expanduser()
    if own.is_file():
        return own
    text = Path(name).as_posix()
    for candidate in (text, text.removeprefix(OLD_PREFIX)):
        packaged = PACKAGED_DIR / candidate
        if not Path(candidate).is_absolute() and ".." not in Path(candidate).parts and packaged.is_file():
            return packaged
    names = packaged_configs()
    close = difflib.get_close_matches(text.removeprefix(OLD_PREFIX), names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"--config {name}: no such file (looked in {Path.cwd()}) and no packaged config of that name.{hint} "
        f"Packaged configs (--config GROUP/NAME.yaml, from any directory): {', '.join(names)}")


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """``args`` with the value of every ``--config X`` / ``--config=X`` / ``-c X`` replaced by the file it means.

    Inline mappings (rule 3) and anything after a bare ``--`` are left as they are.
    """
    out = list(args)
    for i, prefix in _config_values(out):
        out[i] = prefix + _resolved(out[i].removeprefix(prefix))
    return out


def config_values(args: Sequence[str]) -> list[str]:
    """The values given to ``--config`` in ``args``, in order (file names or inline mappings)."""
    return [args[i].removeprefix(prefix) for i, prefix in _config_values(args)]


def load_config_value(value: str) -> object:
    """The YAML content of a ``--config`` value: the file's if it is one, else the value itself parsed."""
    path = Path(value).expanduser()
    try:
        return yaml.safe_load(path.read_text() if path.is_file() else value)
    except (OSError, yaml.YAMLError):
        return None  # jsonargparse reports an unreadable file or bad YAML itself


def _config_values(args: Sequence[str]) -> list[tuple[int, str]]:
    """``(index, prefix)`` of each ``--config`` value in ``args``: prefix ``"--config="`` or ``""``."""
    found = []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in CONFIG_OPTIONS and i + 1 < len(args):
            found.append((i + 1, ""))
        elif arg.startswith("--config="):
            found.append((i, "--config="))
    return found


def _resolved(value: str) -> str:
    inline = not Path(value).expanduser().is_file() and isinstance(load_config_value(value), dict)
    if value.startswith("-") or inline:
        return value  # an option where the value should be (jsonargparse reports it), or an inline mapping
    return str(resolve_config(value))
