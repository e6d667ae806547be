"""VLMModule: the LightningModule that trains a VisionLanguageModel with forgetting guards.

One training step::

    reference pass (only if a guard asks): rows it needs, no_grad, every adapter off  -> base hidden states
    adapted pass: all rows                                                           -> hidden states
    task  = cross-entropy on image rows' supervised tokens (LM head at those positions only)
    total = task + sum(guard.weight * guard(ctx))   each term logged as train/<name>

Checkpoints hold trainable state only (plus optimizer, schedule, loop state, RNG, and the data position that
``VLLoader`` keeps as a Lightning-stateful loader), so a run killed mid-epoch resumes to the same losses. The module
never touches the loaders: ``configure_callbacks`` adds ``DataAccounting``, which marks each trained batch's position
(``Batch["epoch"]``, ``Batch["index"]``) and logs the loaders' ``data/*`` counts.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import FSDPStrategy

from mmpeft.adapters.inject import disabled_adapters
from mmpeft.atomic import write_text_atomic
from mmpeft.batch_plan import PLAN_KEY
from mmpeft.callbacks.data_accounting import DataAccounting
from mmpeft.callbacks.fp8_casts import CachedFP8Casts
from mmpeft.checkpoint import MODEL_FILES_KEY, model_files
from mmpeft.data.collate import select_rows
from mmpeft.data.input_format import input_format_of
from mmpeft.guards.base import Guard, GuardContext
from mmpeft.llm_layers import decoder_layers, enable_gradient_checkpointing
from mmpeft.optimization import LearningRates, check_optimizer_options, warmup_cosine_schedule
from mmpeft.stage_init import init_from_checkpoint
from mmpeft.towers.quantize import check_shardable
from mmpeft.trainability import format_trainability
from mmpeft.trainable_state import trainable_state
from mmpeft.training_mode import drop_warning_filter, train_before_lightning_checks
from mmpeft.types import IGNORE_INDEX, Batch, check_batch
from mmpeft.vlm import VisionLanguageModel

log = logging.getLogger(__name__)


class VLMModule(L.LightningModule):
    """Trains ``vlm`` (its adapter specs decide what trains) with a list of guards.

    Args:
        vlm: the model (towers, projector, per-tower adapter specs).
        guards: forgetting guards (``Replay``, ``KLToBase``, ``L2SP``, ``EWC``, ``LwF``), each with its weight.
        lr: peak learning rate per parameter group.
        weight_decay: AdamW weight decay for matrices (never for biases, norms, soft prompts).
        betas: AdamW betas.
        warmup_steps: linear warmup steps (the first step trains at ``peak / warmup_steps``).
        min_lr_ratio: the cosine schedule decays to ``min_lr_ratio * peak``, reached at the last of
            ``trainer.max_steps`` steps (``mmpeft.optimization.warmup_cosine_schedule``).
        gradient_checkpointing: recompute LLM activations in backward (less memory, ~30% more compute). True:
            every decoder layer; a fraction in (0, 1): only that share of the layers (the first ones), a
            selective trade of memory for speed.
        compile_llm_layers: ``torch.compile`` each LLM decoder layer (fuses norms, activations, rotary
            embeddings and the adapters' element-wise work; the first steps pay the compilation). True uses
            inductor; a string names another ``torch.compile`` backend. Under ``FSDPStrategy`` the gradients are
            dropped before each optimizer step's first forward instead of after it (``on_train_batch_start``).
        cache_fp8_weights: towers with ``quantize: fp8`` keep their frozen weights' FP8 casts while training
            (``mmpeft.callbacks.fp8_casts``) from the start of a fit to its end: the same results, about 8%
            faster steps, and about one more bf16-sized copy of those weights (Llama-2-7B: +14.9 GiB peak on an
            H200). Not under FSDP (its weights are shards).
        init_from: a checkpoint directory (e.g. stage 1's) whose projector (and soft prompt / adapters, where the
            shapes match) initialise this run. Its projector must fit, and it must have been trained on the same
            frozen bases as this model (its ``base_fingerprints``, checked as ``load_pretrained`` checks them).
        init_from_allow_base_mismatch: initialise from ``init_from`` even if its frozen bases differ from this
            model's (a warning instead of an error): for a deliberate switch of base weights, e.g. stage 2 on a
            further-trained LLM of the same architecture.
    """

    def __init__(
        self,
        vlm: VisionLanguageModel,
        guards: list[Guard] | None = None,
        lr: LearningRates | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        gradient_checkpointing: bool | float = False,
        compile_llm_layers: bool | str = False,
        cache_fp8_weights: bool = True,
        init_from: str | None = None,
        init_from_allow_base_mismatch: bool = False,
    ):
        super().__init__()
        check_optimizer_options(weight_decay, betas, warmup_steps, min_lr_ratio)
        self.vlm = vlm
        self.guards = list(guards or [])
        names = [g.name for g in self.guards]
        self.guard_names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self.lr = lr or LearningRates()
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.strict_loading = False  # checkpoints hold trainable state only; keys are checked in on_load_checkpoint
        if gradient_checkpointing:
            enable_gradient_checkpointing(vlm, float(gradient_checkpointing))
        if compile_llm_layers:
            backend = compile_llm_layers if isinstance(compile_llm_layers, str) else "inductor"
            layers = decoder_layers(vlm)
            # layers differ in constants dynamo guards on (layer_idx): one compiled entry each, so the per-code
            # recompile limit (default 8) must cover them all or the rest silently run eagerly. Per layer: with and
            # without gradients (the guards' reference pass) x packed rows of one length (dense attention) or not
            config = torch._dynamo.config
            name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
            setattr(config, name, max(getattr(config, name), 4 * len(layers) + 8))
            for layer in layers:
                layer.compile(backend=backend)
        if init_from is not None:
            init_from_checkpoint(vlm, init_from, allow_base_mismatch=init_from_allow_base_mismatch)
        self.compile_llm_layers = compile_llm_layers
        self.cache_fp8_weights = cache_fp8_weights
        self._pending_rng: dict[str, Any] | None = None
        self._pending_guard_state: dict[str, Any] | None = None
        self._last_step_time: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, stage: str) -> None:
        if isinstance(self.trainer.strategy, FSDPStrategy):
            check_shardable(self.vlm)
        # With a datamodule, Lightning warns that this module's on_before_batch_transfer (the batch plan) is the
        # one it calls: what mmpeft means. A datamodule's own hook would replace it (Lightning then warns that both
        # define it): batches then train unplanned, with the same results and host syncs.
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="You have overridden `on_before_batch_transfer` in `LightningModule` but have "
                                "passed in a `LightningDataModule`")
        self.vlm.run_vision_always = self._distributed
        processor = getattr(getattr(self.trainer, "datamodule", None), "processor", None)
        if processor is not None:  # checkpoints save the prompt format training used, for eval / export
            self.vlm.input_format = input_format_of(processor.renderer)
        table = format_trainability(self.vlm.trainability())  # logged by the model at construction
        log_dir = self.trainer.log_dir  # a collective (broadcast): every rank must call it, and equally often
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(log_dir) / "trainability.md", table + "\n")

    def on_train_start(self) -> None:
        # Towers are built in eval mode (frozen) and Lightning keeps every module's mode as it finds it; adapter
        # dropout and activation checkpointing only act in training mode. Frozen BatchNorm stays in eval mode
        # (VisionTower.train), and frozen bases have no dropout of their own.
        drop_warning_filter(self.__dict__.pop("_eval_mode_filter", None))
        self.vlm.train()

    def on_fit_start(self) -> None:
        # training mode before Lightning checks the modules' modes (mmpeft.training_mode)
        self._eval_mode_filter = train_before_lightning_checks(self, self.vlm, log_here=self.global_rank == 0)
        datamodule = getattr(self.trainer, "datamodule", None)
        text_ratio = getattr(datamodule, "text_ratio", None)
        has_text = datamodule.has_text_rows() if hasattr(datamodule, "has_text_rows") else None
        for name, guard in zip(self.guard_names, self.guards):
            if guard.needs_text_rows and has_text is False:
                raise ValueError(f"guard {name} ({type(guard).__name__}) acts on text-only rows but data.text_ratio "
                                 "is 0 and the train shards hold none: set data.text_ratio > 0 and data.text_shards")
            if guard.needs_text_rows and has_text is None:
                log.warning("guard %s acts on text-only rows; make sure the data has some (data.text_ratio)", name)
            guard.setup(self.vlm)
        if text_ratio and not any(g.needs_text_rows for g in self.guards):
            log.warning("data.text_ratio=%s mixes in text-only rows but no guard uses them (add Replay or "
                        "KLToBase to model.guards)", text_ratio)
        if self._pending_guard_state:
            for name, guard in zip(self.guard_names, self.guards):
                guard.load_state_dict(self._pending_guard_state.get(name, {}))
        if self.trainer.max_steps is None or self.trainer.max_steps < 0:
            raise ValueError("set trainer.max_steps: the learning-rate schedule is defined over it")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Under FSDP1 with compiled layers, set every gradient to None before the first forward of an optimizer
        step, not after it as Lightning does (``optimizer.zero_grad()`` between ``training_step`` and backward).

        Between steps FSDP1 keeps a layer's sharded gradient in its ``FlatParameter``'s ``.grad``; in the forward
        that ``FlatParameter``'s ``.data`` is the unsharded flat tensor, in ``param_dtype`` under mixed precision
        (bf16 with ``precision="bf16-mixed"``), and the layer's weights are views of it. When dynamo (re)compiles a
        layer in that forward (a new shape, the reference pass's no_grad / adapters-off variant), it fakes those
        views together with their base and the base's ``.grad``, and fails: "attempting to assign a gradient with
        dtype 'float' to a tensor with grad_dtype 'BFloat16'" (or "of size [n / world size]" to a tensor "of size
        [n]" without mixed precision). With every original parameter's ``.grad`` None, FSDP's root pre-forward sets
        each ``FlatParameter``'s ``.grad`` to None as well (``use_orig_params=True``, as
        ``benchmarks/distributed_throughput.py`` sets it). The gradients dropped are those the last optimizer step
        used, which Lightning drops before this step's backward anyway; it drops them itself before validation
        within fit (``on_validation_model_zero_grad``) and before each fit / validate / test run.

        Only on the first batch of an optimizer step (Lightning's own zero_grad rule): Lightning runs the other
        batches of an accumulation under FSDP's ``no_sync()``, where the gradient a forward meets is the unsharded
        one, of the unsharded weights' dtype and size, which dynamo fakes without error."""
        if (self.compile_llm_layers and isinstance(self.trainer.strategy, FSDPStrategy)
                and batch_idx % self.trainer.accumulate_grad_batches == 0):
            self.zero_grad(set_to_none=True)

    def configure_callbacks(self) -> list[Callback]:
        """``DataAccounting``: the data position checkpoints store and the ``data/*`` counts, in every Trainer (CLI
        or not). Lightning appends it after the Trainer's own callbacks and moves ``ModelCheckpoint`` after it, so a
        checkpoint written at a step stores that step's position. ``CachedFP8Casts`` with ``cache_fp8_weights``."""
        return [DataAccounting(), *([CachedFP8Casts()] if self.cache_fp8_weights else [])]

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    @property
    def _distributed(self) -> bool:
        return self.world_size > 1

    def _global_count(self, count: int) -> int:
        """A per-rank count summed over ranks (identity on one process)."""
        if not self._distributed:
            return count
        total = torch.tensor(float(count), device=self.device)
        return int(self.trainer.strategy.reduce(total, reduce_op="sum"))

    # ------------------------------------------------------------------ steps

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch, still on the CPU, gets its ``BatchPlan`` (``PLAN_KEY``), moved with the batch: the
        forward then reads no value back from the GPU (``mmpeft.batch_plan``)."""
        if self._trainer is not None and self.trainer.training:
            check_batch(batch)
            plan = self.vlm.plan_batch(batch["input_ids"], batch["attention_mask"], _task_labels(batch),
                                       batch.get("pixel_values"))
            batch = {**batch, PLAN_KEY: plan}  # the loader's dict stays as it was
        return batch

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self._pending_rng is not None:  # restored here: after the epoch's loader consumed its seeds
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        check_batch(batch)  # a clear error naming the key, before any forward
        losses = self._losses(batch)
        total = losses.pop("loss")
        batch_size = batch["input_ids"].shape[0]
        # Under data parallelism each rank's loss is its share scaled to the global batch (guards' ``mean``), so the
        # mean over ranks is the global batch's loss, what one process at the global batch size logs; without
        # sync_dist Lightning would log rank 0's share alone. One scalar all-reduce per key and step.
        synced = self._distributed
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size, sync_dist=synced)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size, sync_dist=synced)
        self.log("train/text_rows", (~batch["has_image"]).float().mean(), batch_size=batch_size, sync_dist=synced)
        # the share of ranks whose batch held no image row (0 or 1 on one process): DDP must not hang on those
        self.log("train/image_free_batches", (~batch["has_image"].any()).float(), batch_size=batch_size,
                 sync_dist=synced)
        # By hand, not Lightning's ThroughputMonitor: that one also logs validation throughput at steps counting
        # validation batches (rows out of step order in metrics.csv, seen with lightning 2.6.6), and RunCSVLogger's
        # resume bookkeeping reads every row's step as a training step.
        # Both logged as CPU tensors where they are known on the host: a number or a GPU value here would be read
        # back (a host sync each step; the progress bar reads tokens_per_s)
        now = time.perf_counter()
        if self._last_step_time is not None:
            plan = batch.get(PLAN_KEY)
            tokens = batch["attention_mask"].sum() if plan is None else torch.tensor(float(plan.num_tokens))
            self.log("tokens_per_s", tokens * self.trainer.world_size / (now - self._last_step_time), prog_bar=True,
                     batch_size=batch_size)
        self._last_step_time = now
        if self.device.type == "cuda":  # the process's peak so far on this rank's device (sweep reports read it)
            peak = torch.tensor(torch.cuda.max_memory_allocated(self.device) / 2**30)
            self.log("perf/peak_memory_gib", peak, batch_size=batch_size)
        return total

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"loss": total, "task": ..., <guard name>: unweighted term, ...}`` for one batch."""
        reference_rows, reference_hidden = self._reference_pass(batch)
        out = self.vlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=_task_labels(batch), pixel_values=batch.get("pixel_values"), plan=batch.get(PLAN_KEY))
        ctx = GuardContext(self.vlm, batch, out, reference_rows, reference_hidden,
                           global_count=self._global_count if self._distributed else None,
                           world_size=self.world_size)
        task = ctx.mean(out.loss * out.num_supervised, out.num_supervised)
        losses = {"task": task}
        total = task
        for name, guard in zip(self.guard_names, self.guards):
            term = guard(ctx)
            losses[name] = term
            total = total + guard.weight * term
        losses["loss"] = total
        return losses

    def _reference_pass(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Base-model hidden states of the rows any guard asks for (adapters off, no autograd)."""
        wanted = [g.reference_rows(batch) for g in self.guards]
        wanted = [w for w in wanted if w is not None]
        if not wanted:
            return None, None
        rows = torch.stack(wanted).any(0)
        if not bool(rows.any()):
            if not self._distributed:
                return rows, None
            # every rank runs the reference pass (same collectives under FSDP); this one's result is unused
            rows = torch.zeros_like(rows)
            rows[0] = True
            sub = select_rows(batch, rows)
            with torch.no_grad(), disabled_adapters(self.vlm):
                self.vlm(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"],
                         pixel_values=sub.get("pixel_values"))
            return torch.zeros_like(rows), None
        sub = select_rows(batch, rows)
        with torch.no_grad(), disabled_adapters(self.vlm):
            ref = self.vlm(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"],
                           pixel_values=sub.get("pixel_values"))
        return rows, ref.hidden_states

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Batch, stage: str) -> None:
        check_batch(batch)
        out = self.vlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                       pixel_values=batch.get("pixel_values"))
        if out.num_supervised:
            self.log(f"{stage}/loss", out.loss, prog_bar=stage == "val", batch_size=batch["input_ids"].shape[0],
                     sync_dist=True)

    # ------------------------------------------------------------------ optimisation

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: (component) x (decayed matrices | undecayed vectors), each with its learning rate."""
        components = {
            "projector": (self.vlm.projector, self.lr.projector),
            "vision": (self.vlm.vision, self.lr.vision),
            "llm": (self.vlm.llm, self.lr.llm),
        }
        if self.vlm.soft_prompt is not None:
            components["soft_prompt"] = (self.vlm.soft_prompt, self.lr.soft_prompt)
        groups = []
        for name, (module, lr) in components.items():
            params = [p for p in module.parameters() if p.requires_grad]
            decay = [p for p in params if p.dim() >= 2 and name != "soft_prompt"]
            other = [p for p in params if not (p.dim() >= 2 and name != "soft_prompt")]
            for suffix, ps, wd in (("", decay, self.weight_decay), ("_no_decay", other, 0.0)):
                if ps:
                    groups.append({"name": name + suffix, "params": ps, "lr": lr, "weight_decay": wd})
        if not groups:
            raise ValueError("nothing to train: every component is frozen (check the adapter specs and "
                             "model.vlm.train_projector)")
        return groups

    def configure_optimizers(self):
        groups = self.parameter_groups()
        # one fused kernel for all trainable tensors when they live on a GPU (LoRA at r=128 is ~300M values), unless
        # a gradient scaler (fp16) must unscale before clipping, which a fused step would do too late
        fused = all(p.is_cuda for g in groups for p in g["params"]) and not has_grad_scaler(self.trainer)
        optimizer = torch.optim.AdamW(groups, betas=self.betas, fused=fused or None)
        schedule = warmup_cosine_schedule(optimizer, self.warmup_steps, self.trainer.max_steps, self.min_lr_ratio)
        # "name": Lightning's LearningRateMonitor (added by the CLI) logs each group as lr/<group name>
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``trainer.gradient_clip_val`` under bf16 autocast with the fused AdamW: Lightning's mixed-precision plugin
        refuses to clip for any optimizer that unscales in its step, though without a gradient scaler (bf16)
        nothing is scaled (``clip_unscaled_gradients``). Every other case goes through Lightning's clipping."""
        if gradient_clip_val and clip_unscaled_gradients(self.trainer, optimizer, gradient_clip_val,
                                                         gradient_clip_algorithm):
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_keys(self) -> set[str]:
        """State-dict keys a checkpoint holds: the model's trainable state (``mmpeft.trainable_state``)."""
        return {f"vlm.{k}" for k in trainable_state(self.vlm)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the trainable state only, and add the model-directory files made from it (``MODEL_FILES_KEY``:
        ``SafetensorsCheckpointIO`` writes them, so every checkpoint loads with ``load_pretrained``)."""
        keys = self.checkpoint_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keys}
        state = {k.removeprefix("vlm."): v for k, v in checkpoint["state_dict"].items()}
        checkpoint[MODEL_FILES_KEY] = model_files(self.vlm, state, extra={"global_step": checkpoint.get("global_step"),
                                                                         "epoch": checkpoint.get("epoch")})
        checkpoint["rng"] = self._rng_states()
        checkpoint["guards"] = {n: g.state_dict() for n, g in zip(self.guard_names, self.guards)}
        checkpoint.pop("hyper_parameters", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keys = self.checkpoint_keys()
        saved = set(checkpoint["state_dict"])
        if saved != keys:
            raise ValueError(
                f"checkpoint does not fit this model: missing {sorted(keys - saved)[:5]}, unexpected "
                f"{sorted(saved - keys)[:5]}. Resume with the same model and adapter config; to start a new stage "
                "from it, use model.init_from instead."
            )
        rng = checkpoint.get("rng")
        if rng is not None and rng["torch"].dim() == 2:  # one row per rank: take this rank's
            rank = self.global_rank if rng["torch"].shape[0] > self.global_rank else 0
            rng = {k: v[rank].clone() for k, v in rng.items()}  # clone: set_rng_state ignores a view's offset
        self._pending_rng = rng
        self._pending_guard_state = checkpoint.get("guards")

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """This process's RNG states; under data parallelism every rank's (``[world, ...]``), since dropout draws
        differ per rank and a resumed rank must continue its own sequence. Called on every rank."""
        state = _get_rng_state()
        if not self._distributed:
            return state
        # gathered as int64 (byte tensors do not survive every backend's all_gather), stored back as bytes
        return {k: self.all_gather(v.to(self.device, torch.int64)).cpu().to(torch.uint8) for k, v in state.items()}


def _task_labels(batch: Batch) -> torch.Tensor:
    """``[B, T]`` labels of the task loss: image rows only (text-only rows are the guards' to train on)."""
    return batch["labels"].masked_fill(~batch["has_image"].unsqueeze(1), IGNORE_INDEX)


def _get_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def has_grad_scaler(trainer: Any) -> bool:
    """Whether ``trainer``'s precision plugin scales the loss (fp16 mixed precision), so gradients must be unscaled
    before they are clipped."""
    return getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None


def clip_unscaled_gradients(trainer: Any, optimizer: torch.optim.Optimizer, clip_val: float,
                            algorithm: str | None) -> bool:
    """Clip the gradients of ``optimizer``'s parameters in place when Lightning's mixed-precision plugin would
    refuse to: a fused optimizer (it unscales inside its step) and no gradient scaler (bf16 autocast: nothing is
    scaled, so clipping before the step is exact). Returns False, doing nothing, in every other case (fp16 with a
    scaler, other precision plugins such as FSDP's, a non-fused optimizer), which Lightning's clipping handles.

    ``algorithm``: ``norm`` (default; the total 2-norm over all parameters, ``clip_grad_norm_``) or ``value``.
    """
    plugin = getattr(trainer, "precision_plugin", None)
    if not (isinstance(plugin, MixedPrecision) and plugin.scaler is None and _optimizer_handles_unscaling(optimizer)):
        return False
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if str(getattr(algorithm, "value", algorithm) or "norm").lower() == "value":
        torch.nn.utils.clip_grad_value_(params, clip_val)
    else:
        torch.nn.utils.clip_grad_norm_(params, clip_val)
    return True
