"""Eval config files: the tasks, and optionally the settings, of ``mmpeft eval --config FILE``.

An eval config is YAML read by jsonargparse, like every mmpeft config; each task is a ``class_path`` /
``init_args`` entry naming an ``mmpeft.eval.task.EvalTask`` subclass (as guards are named in ``model.guards``)::

    tasks:
      - class_path: mmpeft.eval.tasks.VQATask
        init_args: {shards: data/test_vqa, max_new_tokens: 8}
      - class_path: mmpeft.eval.tasks.TextProbeTask
        init_args:
          probes:
            - class_path: mmpeft.eval.text_probes.PerplexityProbe
              init_args: {name: prose, path: v1/prose.txt, window: 256}
    batch_size: 32          # optional settings (SETTINGS); the command's flags override them

``FILE`` is the user's file or a packaged one (``eval/demo.yaml``: ``mmpeft.config_files.resolve_config``). Several
files stack: their tasks add up in order, a setting of a later file overrides an earlier one's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ArgumentParser

from mmpeft.config_files import resolve_config
from mmpeft.eval.task import EvalTask

SETTINGS = ("batch_size", "max_new_tokens", "limit", "allow_partial")
"""Evaluation settings an eval config may hold (``EvalContext`` fields of the same names)."""


@dataclass
class EvalConfig:
    """What eval config files give: ``tasks`` (built) and ``settings`` (only those the files set)."""

    tasks: list[EvalTask] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def eval_config_parser() -> ArgumentParser:
    """The schema of an eval config file (module docstring)."""
    parser = ArgumentParser(allow_abbrev=False, exit_on_error=False, default_env=False)
    parser.add_argument("--tasks", type=list[EvalTask], default=[], help="evaluation tasks (class_path/init_args)")
    parser.add_argument("--batch_size", type=int | None, default=None, help="samples per generation batch")
    parser.add_argument("--max_new_tokens", type=int | None, default=None,
                        help="answer budget of generation tasks that set none")
    parser.add_argument("--limit", type=int | None, default=None, help="at most this many samples per task")
    parser.add_argument("--allow_partial", type=bool | None, default=None,
                        help="score even when shard rows were lost or samples skipped")
    return parser


def load_eval_config(names: Sequence[str]) -> EvalConfig:
    """The tasks and settings of the eval config files ``names``, stacked in order (module docstring).

    Raises:
        FileNotFoundError: a name that is neither a file nor a packaged config.
        ValueError: a file that does not fit the schema (an unknown key, a class that is not an ``EvalTask``, an
            init argument the class does not take), naming the file and jsonargparse's reason; or an error of a
            task's constructor (e.g. a missing probe file), naming the file.
    """
    parser = eval_config_parser()
    config = EvalConfig()
    for name in names:
        path = resolve_config(name)
        try:
            parsed = parser.parse_path(str(path), defaults=False)
        except argparse.ArgumentError as e:
            raise ValueError(f"eval config {path}: {e}") from None
        try:
            built = parser.instantiate_classes(parsed)
        except (ValueError, OSError) as e:
            message = f"eval config {path}: {e}"
            try:  # the same kind (FileNotFoundError stays one) ...
                error = type(e)(message)
            except TypeError:  # ... unless it cannot be built from a message (UnicodeDecodeError)
                error = (OSError if isinstance(e, OSError) else ValueError)(message)
            raise error from e
        config.tasks += list(built.get("tasks") or [])
        config.settings.update({key: built[key] for key in SETTINGS if built.get(key) is not None})
    return config
