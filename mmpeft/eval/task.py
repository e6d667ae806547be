"""The evaluation task contract: ``EvalTask.run(vlm, context) -> TaskResult``.

A task is one benchmark or probe (VQA, captions, the text probes, vision drift, lm-eval, ...), built in Python or
from YAML (``class_path`` / ``init_args``, as guards are) and run by ``mmpeft.eval.loop.evaluate``, which the
``mmpeft eval`` command, the ``ForgettingProbes`` training callback and Python users share. Adding a benchmark is
one subclass in one file (``mmpeft/eval/tasks/``) and a YAML entry naming it.

What a task may rely on, from the ``EvalContext`` the loop gives it:

- ``renderer``: the prompt format (None: the model's saved input format, ``renderer_for(vlm)``);
- ``batch_size``, ``max_new_tokens`` (the budget of a generation task that sets none), ``limit`` (at most this many
  samples per task that reads shards; a partial set by request, recorded in ``scores["missing"]``);
- ``skips`` and ``audit``: this task's ledgers. A task that reads shards counts every skipped sample in both
  (``mmpeft.eval.generate.count_skip``) and every complete shard read in ``audit``; with ``allow_partial`` False the
  first loss raises ``PartialData``. The loop merges them into ``scores["skipped"]`` / ``scores["missing"]``;
- ``allow_empty``: a task left with no sample to score returns figures without a score instead of raising
  ``PartialData`` (training curves go on; ``mmpeft eval`` refuses);
- ``base_cache``: results of the base model (adapters off) by name, reused across calls on the same base;
- ``progress``: whether to show progress bars.

The model's device is the model's (``vlm`` is moved before the loop): tasks put inputs where its parameters are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.integrity import ShardAudit
from mmpeft.data.skips import SkipLog
from mmpeft.vlm import VisionLanguageModel


@dataclass
class EvalContext:
    """What the tasks of one evaluation share (module docstring); the loop gives each task its own ``skips`` and
    ``audit``."""

    renderer: ChatRenderer | None = None
    batch_size: int = 8
    max_new_tokens: int = 16
    limit: int | None = None
    allow_partial: bool = False
    allow_empty: bool = False
    allow_hint: str = "--allow-partial (evaluate(..., allow_partial=True))"
    base_cache: dict[str, Any] | None = None
    progress: bool = True
    skips: SkipLog = field(default_factory=SkipLog)
    audit: ShardAudit | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"evaluation option {name}={value!r}: must be an integer >= 1")
        if self.audit is None:
            self.audit = ShardAudit(self.allow_partial, allow_hint=self.allow_hint)


@dataclass
class TaskResult:
    """What a task gives back: ``scores`` (JSON-ready, written under the task's name in the scores file) and
    ``predictions`` (one dict per generated answer, JSON-ready, with at least ``id``; the loop adds ``task``)."""

    scores: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


class EvalTask:
    """Base of evaluation tasks.

    Subclasses set ``name`` (the key of their scores; unique within one evaluation) and implement ``run``; they may
    override ``check`` (cheap checks the loop runs for every task before any task runs, so a missing tool fails
    before minutes of generation), ``summary`` (lines for the command's summary) and ``curve_metrics`` (the figures
    a training callback logs).
    """

    name: str
    reads_shards: bool = False
    """True for tasks that read evaluation shards: their data accounting is reported per task even when nothing
    was missing (``scores["missing"]["by_task"]``)."""

    def check(self) -> None:
        """Raise if the task cannot run here (a missing tool or file); called before any task runs."""

    def run(self, vlm: VisionLanguageModel, context: EvalContext) -> TaskResult:
        raise NotImplementedError(f"{type(self).__name__} must implement run(vlm, context) -> TaskResult")

    def summary(self, scores: dict[str, Any]) -> list[str]:
        """Human-readable lines about ``scores`` (this task's); default: none."""
        return []

    def curve_metrics(self, scores: dict[str, Any]) -> dict[str, float]:
        """Scalar figures for training curves, keyed as they are logged under ``probe/``: by default
        ``<name>/<key>`` for every top-level number of ``scores``."""
        return {f"{self.name}/{k}": float(v) for k, v in scores.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={getattr(self, 'name', '?')!r})"
