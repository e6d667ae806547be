"""``ForgettingProbes``: evaluation tasks every N training steps -> forgetting curves.

The tasks run through the same loop as ``mmpeft eval`` (``mmpeft.eval.loop.evaluate``): the text probes (one
``TextProbeTask``), the VQA probe (a ``VQATask`` on ``vqa_shards``) and any other ``tasks`` given. Each task logs
its ``curve_metrics`` under ``probe/``:

- text probes, per probe metric: ``probe/<name>/<metric>`` (adapted), ``..._base`` and ``..._delta`` (with
  ``_delta_lo`` / ``_delta_hi``); for perplexity also ``probe/<name>/perplexity_delta_pct``;
- VQA: ``probe/vqa/overall`` (with ``_lo``/``_hi``), ``probe/vqa/questions`` (scored);
- every task that reads shards: ``probe/<task>/missing`` (rows skipped or lost from its shards) and
  ``probe/<task>/damaged_shards`` (shards without a manifest count that lost an unknown number of rows).

A probe scores what remains and logs what it lacked (partial sets are allowed here); ``overall`` is not logged at a
point with no question left. The base never changes during training, so its probe results are computed once and
reused.

Generation tasks prompt the model in its input format (``renderer_for(vlm)``), which ``VLMModule.setup`` sets from
the training data's renderer: the same system prompt and template as training and as the checkpoints record.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mmpeft.data.integrity import describe_losses
from mmpeft.eval.loop import check_tasks, evaluate
from mmpeft.eval.task import EvalTask
from mmpeft.eval.tasks import TextProbeTask, VQATask
from mmpeft.eval.text_probes import TextProbe

log = logging.getLogger(__name__)


class ForgettingProbes(Callback):
    """Args:
    probes: text probes (``PerplexityProbe``, ``MultipleChoiceProbe``, ``ExactMatchProbe``, ``ChatStyleProbe``),
        run as one ``TextProbeTask``.
    every_n_steps: probe interval in optimizer steps (also at step 0 and at the end of training).
    vqa_shards: optional VQA shards scored at the same points (greedy generation; a ``VQATask`` named ``vqa``).
    vqa_limit: at most this many samples per point for each task that reads shards (the VQA probe's questions).
    max_new_tokens: answer budget of generation tasks that set none.
    batch_size: samples per generation batch.
    tasks: further evaluation tasks (any ``mmpeft.eval.task.EvalTask``, e.g. from YAML by ``class_path``), run
        after the probes and the VQA probe.
    """

    def __init__(self, probes: list[TextProbe] | None = None, every_n_steps: int = 100,
                 vqa_shards: str | list[str] | None = None, vqa_limit: int | None = 200, max_new_tokens: int = 8,
                 batch_size: int = 16, tasks: list[EvalTask] | None = None):
        self.tasks: list[EvalTask] = (([TextProbeTask(probes)] if probes else [])
                                      + ([VQATask(vqa_shards)] if vqa_shards is not None else [])
                                      + list(tasks or []))
        check_tasks(self.tasks)  # a bad or repeated name fails when the run is configured, not at the first point
        self.every_n_steps = every_n_steps
        self.vqa_limit = vqa_limit
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.base: dict[str, Any] = {}
        self._last_step = -1

    def _run(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero or not self.tasks:
            return
        self._last_step = step
        scores, _ = evaluate(module.vlm, self.tasks, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                             limit=self.vqa_limit, allow_partial=True, allow_empty=True, base_cache=self.base,
                             progress=False)
        metrics: dict[str, float] = {}
        for task in self.tasks:
            metrics.update({f"probe/{key}": value for key, value in task.curve_metrics(scores[task.name]).items()})
            missing = scores["missing"]["by_task"].get(task.name)
            if missing is None:
                continue
            metrics[f"probe/{task.name}/missing"] = float(missing["missing_rows"])
            metrics[f"probe/{task.name}/damaged_shards"] = float(len(missing["damaged"]))
            if missing["missing_rows"] or missing["damaged"]:
                log.warning("probe %s at step %d: %d row(s) missing (skipped %s; lost %s)", task.name, step,
                            missing["missing_rows"], missing["skipped"] or "none",
                            describe_losses(missing["lost"], missing["damaged"]))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """Refuses a sharded model: the probes run on rank 0 alone, and under FSDP every forward of a sharded layer
        is a collective all ranks must join (rank 0 would wait for the others for ever)."""
        from lightning.pytorch.strategies import FSDPStrategy

        if self.tasks and isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(
                "ForgettingProbes in trainer.callbacks cannot run under FSDP (trainer/fsdp.yaml): the in-loop probes "
                "run on rank 0 alone, and a forward through FSDP's sharded layers needs every rank. Leave the callback "
                "out (e.g. an experiment file without it) and score checkpoints with `mmpeft eval`, or train with "
                "trainer/ddp.yaml, under which the probes run.")

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run(trainer, module)
