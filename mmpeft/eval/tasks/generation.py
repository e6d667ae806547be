"""``GenerationTask``: greedy answers to the prompts of evaluation shards, scored by the subclass.

The base of VQA and captions, and of any benchmark that asks each record's question and scores the answers (POPE,
MME, ...): a subclass sets ``name`` and implements ``score(predictions)``. Records are read, checked and counted by
``mmpeft.eval.generate.predict`` (skips and lost rows into the context's ledgers).
"""

from __future__ import annotations

from typing import Any

from mmpeft.data.input_format import renderer_for
from mmpeft.data.integrity import PartialData
from mmpeft.data.shard_specs import resolve_shards
from mmpeft.eval.generate import predict
from mmpeft.eval.summary import missing_line
from mmpeft.eval.task import EvalContext, EvalTask, TaskResult
from mmpeft.vlm import VisionLanguageModel


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def describe_record(p: dict[str, Any]) -> str:
    """A prediction's record for messages: its id and, when known, ``<shard>:<key>``."""
    return f"{p['id']!r}" + (f" ({p['where']})" if p.get("where") else "")


def first_by_key(seen: dict[str, dict[str, Any]], key: Any, p: dict[str, Any]) -> dict[str, Any] | None:
    """The prediction already seen under ``key`` (compared as text: the scorers' per-item keys are strings), else
    None after recording ``p`` under it."""
    first = seen.get(str(key))
    if first is None:
        seen[str(key)] = p
    return first


def nothing_left(task: EvalTask, spec: Any, context: EvalContext) -> None:
    """Called when ``task`` has no sample left to score in ``spec`` (every row skipped or lost under
    ``allow_partial``, or shards without rows): returns under ``context.allow_empty``, else raises ``PartialData``
    with what was missing."""
    if not context.allow_empty:
        raise PartialData(f"no {task.name} sample left to score in {spec}; "
                          + missing_line({**context.audit.summary(), "limit": context.limit}))


class GenerationTask(EvalTask):
    """Greedy generation over evaluation shards, then ``score(predictions)``.

    Args:
        shards: a shard directory, glob, brace pattern, or a list of those (``mmpeft.data.shard_specs``).
        name: the key of this task's scores.
        max_new_tokens: generation budget per answer (None: the evaluation's ``max_new_tokens``).

    Prompts are each record's turns up to its last user turn in the context's format (None: the model's saved
    input format). Predictions: ``{"id", "where", "prediction", "eval", "source"}``.
    """

    reads_shards = True

    empty_scores: dict[str, Any] = {}
    """The scores of a task left with no sample (under ``allow_empty``)."""

    def __init__(self, shards: str | list[str], name: str, max_new_tokens: int | None = None):
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or max_new_tokens < 1):
            raise ValueError(f"{type(self).__name__} {name!r}: max_new_tokens={max_new_tokens!r} must be >= 1")
        self.shards, self.name, self.max_new_tokens = shards, name, max_new_tokens

    def check(self) -> None:
        resolve_shards(self.shards)  # a missing shard directory fails before the model loads or anything runs

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement score(predictions)")

    def run(self, vlm: VisionLanguageModel, context: EvalContext) -> TaskResult:
        renderer = context.renderer if context.renderer is not None else renderer_for(vlm)
        budget = self.max_new_tokens if self.max_new_tokens is not None else context.max_new_tokens
        preds = predict(vlm, renderer, resolve_shards(self.shards), context.batch_size, budget, context.skips,
                        context.limit, description=f"{self.name} generation", audit=context.audit,
                        progress=context.progress)
        if not preds:
            nothing_left(self, self.shards, context)
            return TaskResult(dict(self.empty_scores))
        return TaskResult(self.score(preds), preds)
