"""``evaluate(vlm, tasks)``: the one evaluation loop, shared by ``mmpeft eval``, the ``ForgettingProbes`` training
callback and Python users.

    from mmpeft.eval.loop import evaluate
    from mmpeft.eval.tasks import CaptionTask, TextProbeTask, VQATask
    from mmpeft.eval.text_probes import PerplexityProbe

    scores, predictions = evaluate(vlm, [VQATask("data/test_vqa", max_new_tokens=8),
                                         CaptionTask("data/test_captions"),
                                         TextProbeTask([PerplexityProbe("prose", "prose.txt")])])

``scores``: each task's scores under its name, then ``skipped`` (skipped samples by reason, all tasks) and
``missing`` (what the figures leave out: ``ShardAudit.summary()`` over all tasks, ``limit``, ``allow_partial``, and
``by_task``: the same summary per task that reads shards). ``predictions``: every task's predictions, each with its
``task`` name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mmpeft.data.integrity import ShardAudit
from mmpeft.data.skips import SkipLog
from mmpeft.eval.task import EvalContext, EvalTask
from mmpeft.vlm import VisionLanguageModel

RESERVED = ("checkpoint", "step", "skipped", "missing")
"""Keys of the scores file that are not task names."""


def check_tasks(tasks: Sequence[Any]) -> None:
    """Raise ``ValueError`` for a task that is not an ``EvalTask`` or a name that is empty, reserved or repeated
    (each task's scores are written under its name: a repeated one would overwrite another's)."""
    seen: dict[str, Any] = {}
    for task in tasks:
        if not isinstance(task, EvalTask):
            raise ValueError(f"{task!r} is not an evaluation task: give instances of mmpeft.eval.task.EvalTask "
                             "subclasses (mmpeft.eval.tasks.VQATask, CaptionTask, TextProbeTask, ...)")
        name = getattr(task, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{task!r} has no name: set a non-empty name (its scores are written under it)")
        if name in RESERVED:
            raise ValueError(f"{task!r}: the name {name!r} is reserved for the scores file's own {RESERVED}; "
                             "give the task another name")
        if name in seen:
            raise ValueError(f"two tasks are named {name!r} ({seen[name]!r} and {task!r}): give each a distinct "
                             "name (e.g. name: vqa_val)")
        seen[name] = task


def evaluate(vlm: VisionLanguageModel, tasks: Sequence[EvalTask], **options: Any,
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``tasks`` in order on ``vlm``; returns ``(scores, predictions)`` (module docstring).

    Args:
        options: ``EvalContext`` fields (``renderer``, ``batch_size``, ``max_new_tokens``, ``limit``,
            ``allow_partial``, ``allow_empty``, ``allow_hint``, ``base_cache``, ``progress``).

    Every task's ``check`` runs before any task runs; the model is in eval mode while tasks run, then back in its
    mode. Raises ``PartialData`` at the first skipped sample or lost row unless ``allow_partial``, and
    ``ValueError`` for bad tasks (``check_tasks``) or options.
    """
    tasks = list(tasks)
    check_tasks(tasks)
    context = EvalContext(**options)
    for task in tasks:
        task.check()
    scores: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    skips, total = SkipLog(), ShardAudit(allow_partial=True)
    by_task: dict[str, dict[str, Any]] = {}
    was_training = vlm.training
    vlm.eval()  # every task sees the model in eval mode (no dropout); training resumes as it was
    try:
        for task in tasks:
            own = dataclasses.replace(context, skips=SkipLog(), audit=None)  # this task's ledgers
            result = task.run(vlm, own)
            scores[task.name] = result.scores
            predictions += [{**p, "task": task.name} for p in result.predictions]
            skips.merge(own.skips.counts)
            total.outcomes += own.audit.outcomes
            for reason, count in own.audit.skipped.items():
                total.skipped[reason] = total.skipped.get(reason, 0) + count
            if task.reads_shards or own.audit.outcomes or own.audit.skipped:
                by_task[task.name] = own.audit.summary()
    finally:
        vlm.train(was_training)
    scores["skipped"] = dict(skips.counts)
    scores["missing"] = {**total.summary(), "limit": context.limit, "allow_partial": context.allow_partial,
                         "by_task": by_task}
    return scores, predictions
