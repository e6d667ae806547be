"""A ``mmpeft fit|validate|test`` option that does not parse, said in one message: the option, where it was set
(which ``--config`` file, or the command line) and the nearest valid names.

jsonargparse's own error printed the whole usage (about 80 lines) and then, for a misspelt key in a stacked YAML
file, ``Group 'data' does not accept option 'batchsize'``: neither the file nor ``batch_size``. Only the message
and the arguments are read here; a class is looked up only when parsing has already imported it.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from collections.abc import Iterable, Sequence

from mmpeft.config_files import config_values, load_config_value

# (pattern, how to get the full dotted key from its groups)
_UNKNOWN_KEY = [
    (re.compile(r"Subcommand '[^']+' does not accept option '([^']+)'"), lambda m: m.group(1)),
    (re.compile(r"Group '([^']+)' does not accept option '([^']+)'"), lambda m: f"{m.group(1)}.{m.group(2)}"),
]
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_CLASS_OPTION = re.compile(r"Problem with given class_path '([^']+)':\s*(?:\n\s*)*Option '([^']+)' is not accepted")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')


def explain(message: str, args: Sequence[str], known: Iterable[str], subcommand: str) -> str:
    """The error for ``message`` (jsonargparse's) given the command's ``args`` (``--config`` values resolved) and
    the ``known`` dotted option names of the subcommand: one line per problem, ending with where to look."""
    known = sorted(set(known))
    lines = []
    for pattern, key_of in _UNKNOWN_KEY:
        for match in pattern.finditer(message):
            key = key_of(match)
            lines.append(f"{key}{_where(key, args)} is not a {subcommand} option{_did_you_mean(key, known)}")
    if (match := _UNRECOGNIZED.search(message)) is not None:
        for flag in match.group(1).split():
            if flag.startswith("--"):
                key = flag[2:].split("=", 1)[0]
                lines.append(f"--{key} (on the command line) is not a {subcommand} option"
                             f"{_did_you_mean(key, known, prefix='--')}")
    if (match := _CLASS_OPTION.search(message)) is not None:
        class_path, option = match.groups()
        keys = _PARSER_KEY.findall(message[: match.start()])
        under = " -> ".join(keys)
        where = _where(option, args, within=keys[0] if keys else None)
        lines.append(f"{option!r}{where} is not an argument of {class_path}"
                     f"{f' (under {under})' if under else ''}"
                     f"{_did_you_mean(option, _init_parameters(class_path), quote=True)}")
    if not lines:  # a wrong value rather than a wrong name: jsonargparse's text names the key and what it expected
        lines = [message.strip()]
        keys = _PARSER_KEY.findall(message)
        # only a plain key: for a nested one the outer key's places say nothing about the inner value
        if len(keys) == 1 and (where := _where(keys[0], args)):
            lines.append(f"{keys[0]} is set{where}; the last one given wins")
    return "\n".join(lines) + (f"\n(mmpeft {subcommand} --help lists the options; --print_config shows the merged "
                               "config)")


def _did_you_mean(key: str, known: Sequence[str], prefix: str = "", quote: bool = False) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    if not close:
        return ""
    names = [repr(c) if quote else f"{prefix}{c}" for c in close]
    return f"; did you mean {' or '.join(names)}?"


def _where(key: str, args: Sequence[str], within: str | None = None) -> str:
    """`` (in FILE, FILE; on the command line)``: the --config values that set ``key`` and whether an argument
    names it; ``""`` when nothing does. ``key`` is dotted from the top, or with ``within`` (a dotted key) a key of
    that name anywhere under it (a class's argument, below its ``init_args``)."""
    places = [value for value in config_values(args) if _sets(load_config_value(value), key, within)]
    places = [f"in {', '.join(places)}"] if places else []
    prefix = rf"{re.escape(within)}\.(.*\.)?" if within else r"(^|.*[.-])"
    if any(a.startswith("--") and re.match(rf"{prefix}{re.escape(key)}(=|$)", a[2:]) for a in args):
        places.append("on the command line")
    return f" ({'; '.join(places)})" if places else ""


def _sets(tree: object, key: str, within: str | None) -> bool:
    for part in (within or key).split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return _has_key_anywhere(tree, key) if within else True


def _has_key_anywhere(tree: object, name: str) -> bool:
    if isinstance(tree, dict):
        return name in tree or any(_has_key_anywhere(v, name) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_key_anywhere(v, name) for v in tree)
    return False


def _init_parameters(class_path: str) -> list[str]:
    """The constructor's parameter names of ``class_path`` if its module is already imported (never imports)."""
    module, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    if not inspect.isclass(cls):
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
