"""``ForgettingProbes``: text probes (and optionally VQA accuracy) every N training steps -> forgetting curves.

Logged per probe metric: ``probe/<name>/<metric>`` (adapted), ``..._base`` and ``..._delta``; for perplexity also
``probe/<name>/perplexity_delta_pct``; with ``vqa_shards``, ``probe/vqa/overall`` (with ``_lo``/``_hi``),
``probe/vqa/questions`` (scored), ``probe/vqa/missing`` (rows skipped or lost from their shards, by the eval reader's
accounting) and ``probe/vqa/damaged_shards`` (shards without a manifest count that lost an unknown number of rows).
The probe scores what remains and logs what it lacked; ``overall`` is not logged at a point with no question left.
The base never changes during training, so it is evaluated once and reused.

Generation probes and the VQA probe prompt the model in its input format (``renderer_for(vlm)``), which
``VLMModule.setup`` sets from the training data's renderer: the same system prompt and template as training and as
the checkpoints record; the adapted and base passes get identical prompt ids (``text_probes.compare``).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from mmpeft.eval.text_probes import TextProbe, compare

log = logging.getLogger(__name__)


class ForgettingProbes(Callback):
    """Args:
    probes: text probes (``PerplexityProbe``, ``MultipleChoiceProbe``, ``ExactMatchProbe``, ``ChatStyleProbe``).
    every_n_steps: probe interval in optimizer steps (also at step 0 and at the end of training).
    vqa_shards: optional VQA shards scored at the same points (greedy generation).
    vqa_limit: at most this many VQA questions per point.
    """

    def __init__(self, probes: list[TextProbe], every_n_steps: int = 100, vqa_shards: str | list[str] | None = None,
                 vqa_limit: int | None = 200, max_new_tokens: int = 8, batch_size: int = 16):
        self.probes = probes
        self.every_n_steps = every_n_steps
        self.vqa_shards = vqa_shards
        self.vqa_limit = vqa_limit
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.base: dict[str, Any] = {}
        self._last_step = -1

    def _run(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        metrics: dict[str, float] = {}
        for name, r in compare(module.vlm, self.probes, base_cache=self.base, progress=False).items():
            for key, delta in r["delta"].items():
                metrics[f"probe/{name}/{key}"] = float(r["adapted"][key])
                metrics[f"probe/{name}/{key}_base"] = float(r["base"][key])
                metrics[f"probe/{name}/{key}_delta"] = float(delta)
                interval = r.get("interval_95", {}).get(key, {}).get("delta")
                if interval is not None:  # 95% interval over the probe's items, for curves with error bands
                    metrics[f"probe/{name}/{key}_delta_lo"], metrics[f"probe/{name}/{key}_delta_hi"] = interval
                if key == "perplexity":
                    metrics[f"probe/{name}/perplexity_delta_pct"] = 100 * delta / r["base"][key]
                    if interval is not None:
                        metrics[f"probe/{name}/perplexity_delta_pct_lo"] = 100 * interval[0] / r["base"][key]
                        metrics[f"probe/{name}/perplexity_delta_pct_hi"] = 100 * interval[1] / r["base"][key]
        if self.vqa_shards is not None:
            from mmpeft.data.datamodule import resolve_shards
            from mmpeft.data.input_format import renderer_for
            from mmpeft.data.integrity import ShardAudit, describe_losses
            from mmpeft.eval.generate import predict
            from mmpeft.eval.run import score_vqa

            renderer = renderer_for(module.vlm)  # the format the checkpoints save (VLMModule.setup sets it)
            was_training = module.vlm.training
            audit = ShardAudit(allow_partial=True)  # a probe curve goes on; what it lacked is logged with it
            preds = predict(module.vlm, renderer, resolve_shards(self.vqa_shards), self.batch_size,
                            self.max_new_tokens, limit=self.vqa_limit, description="probe VQA", audit=audit)
            module.vlm.train(was_training)
            missing = audit.summary()
            metrics["probe/vqa/questions"] = float(len(preds))
            metrics["probe/vqa/missing"] = float(missing["missing_rows"])
            metrics["probe/vqa/damaged_shards"] = float(len(missing["damaged"]))
            if missing["missing_rows"] or missing["damaged"]:
                log.warning("probe VQA at step %d scored %d question(s); %d row(s) missing (skipped %s; lost %s)",
                            step, len(preds), missing["missing_rows"], missing["skipped"] or "none",
                            describe_losses(missing["lost"], missing["damaged"]))
            if preds:
                vqa = score_vqa(preds)
                metrics["probe/vqa/overall"] = vqa["overall"]
                metrics["probe/vqa/overall_lo"], metrics["probe/vqa/overall_hi"] = vqa["interval_95"]["overall"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run(trainer, module)
