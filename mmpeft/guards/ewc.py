"""EWC: a diagonal-Fisher-weighted penalty on how far the LLM's weights moved (Kirkpatrick et al., 2017).

``estimate_fisher`` measures, on text-only batches, the diagonal empirical Fisher of the *base* LLM (every
adapter off) for the weights the LLM adapter touches: ``F = mean over batches of (d loss / d W)^2`` (minibatch
gradients, the usual practical approximation). It is stored as safetensors keyed ``<layer name>.weight`` in the
un-adapted layout, so one file serves any adapter method on the same targets. ``mmpeft fisher`` writes it.

The penalty is ``sum_layers sum(F * delta_W^2)`` with ``delta_W`` the adapter's effective weight delta (or
``theta - theta_0`` for a fully trained LLM). With ``normalize`` the Fisher is divided by its mean, so ``weight``
is comparable across models and datasets. ``theta_0`` is checkpointed keyed like the Fisher (LLM parameter names),
so a resumed run measures from the run's start (``mmpeft.guards.start_point``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from mmpeft.adapters.deltas import adapter_layers, delta_weight
from mmpeft.adapters.inject import disabled_adapters
from mmpeft.atomic import atomic_path
from mmpeft.guards.base import Guard, GuardContext
from mmpeft.guards.start_point import restore_start
from mmpeft.towers.quantize import quantization_scheme
from mmpeft.vlm import VisionLanguageModel


def _llm_fully_trained(vlm: VisionLanguageModel) -> bool:
    return "llm.model" in vlm.fully_trained_modules()


def fisher_targets(vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
    """``{key: base weight}`` the Fisher covers: adapted LLM layers, or every LLM parameter when fully trained."""
    llm = vlm.llm.model
    if _llm_fully_trained(vlm):
        return dict(llm.named_parameters())
    layers = adapter_layers(llm)
    if not layers:
        raise ValueError("EWC needs an adapted or fully trained LLM (model.vlm.llm_adapter.method is 'frozen')")
    return {f"{name}.weight": layer.get_base_layer().weight for name, layer in layers.items()}


def estimate_fisher(vlm: VisionLanguageModel, batches: Iterable[dict[str, Any]], max_batches: int | None = None,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Diagonal empirical Fisher of the base LLM on ``batches`` (text-only batches; every supervised token counts).

    Returns ``(fisher, metadata)``; ``requires_grad`` flags are left as found.
    """
    scheme = quantization_scheme(vlm.llm.model)
    if scheme is not None:
        raise ValueError(
            f"The Fisher needs gradients of the LLM's base weights, which its quantize={scheme!r} layers do not "
            "compute. Estimate it on the same LLM without quantize (the file is keyed by layer names, so EWC on the "
            "quantised run reads it unchanged).")
    targets = fisher_targets(vlm)
    flags = {p: p.requires_grad for p in vlm.parameters()}
    fisher = {k: torch.zeros_like(w, dtype=torch.float32) for k, w in targets.items()}
    base = contextlib.nullcontext() if _llm_fully_trained(vlm) else disabled_adapters(vlm)
    count = tokens = 0
    was_training = vlm.training
    vlm.eval()
    try:
        with base:
            vlm.requires_grad_(False)
            for w in targets.values():
                w.requires_grad_(True)
            for batch in tqdm(batches, total=max_batches, desc="Fisher"):
                if max_batches is not None and count >= max_batches:
                    break
                out = vlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"], pixel_values=batch.get("pixel_values"))
                if out.num_supervised == 0:
                    continue
                grads = torch.autograd.grad(out.loss, list(targets.values()))
                for key, g in zip(targets, grads):
                    fisher[key] += g.float() ** 2
                count += 1
                tokens += out.num_supervised
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        vlm.train(was_training)
    if count == 0:
        raise ValueError("no batch with supervised tokens: the Fisher data is empty")
    fisher = {k: (v / count).cpu() for k, v in fisher.items()}
    return fisher, {"llm": str(vlm.llm.init_args["name"]), "batches": str(count), "tokens": str(tokens)}


def save_fisher(path: str | Path, fisher: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in fisher.items()}, tmp, metadata=metadata)
    return path


class EWC(Guard):
    """Args:
    weight: multiplier in the total loss (lambda).
    fisher_path: safetensors file written by ``mmpeft fisher``.
    normalize: divide the Fisher by its mean (scale-free ``weight``).
    """

    name = "ewc"

    def __init__(self, fisher_path: str, weight: float = 1.0, normalize: bool = True):
        super().__init__(weight)
        self.fisher_path = fisher_path
        self.normalize = normalize
        self.fisher: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}

    def setup(self, vlm: VisionLanguageModel) -> None:
        path = Path(self.fisher_path)
        if not path.is_file():
            raise FileNotFoundError(f"EWC fisher_path {path} not found; write it with `mmpeft fisher`")
        saved = load_file(path)
        targets = fisher_targets(vlm)
        missing = sorted(set(targets) - set(saved))
        wrong = [(k, tuple(saved[k].shape), tuple(w.shape)) for k, w in targets.items()
                 if k in saved and saved[k].shape != w.shape]
        if missing or wrong:
            raise ValueError(f"Fisher file {path} does not fit this model: missing {missing[:5]}, shape mismatch "
                             f"(file, model) {wrong[:5]}. Estimate it for this LLM and adapter targets.")
        scale = torch.cat([saved[k].flatten() for k in targets]).mean() if self.normalize else 1.0
        device = next(iter(targets.values())).device
        self.fisher = {k: (saved[k] / scale).to(device) for k in targets}
        if _llm_fully_trained(vlm):
            self.start = {k: w.detach().clone() for k, w in targets.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.start)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.start = restore_start(self.name, self.start, state)  # the run's start, not the resume point

    def __call__(self, ctx: GuardContext) -> torch.Tensor:
        llm = ctx.vlm.llm.model
        total = ctx.zero()
        if self.start:
            for key, p in llm.named_parameters():
                total = total + (self.fisher[key] * (p - self.start[key]).pow(2)).sum()
            return total
        for name, layer in adapter_layers(llm).items():
            fisher = self.fisher[f"{name}.weight"]
            # checkpointed: the [out, in] delta is rebuilt in backward instead of kept for every layer
            total = total + checkpoint(lambda layer=layer, f=fisher: (f * delta_weight(layer).float().pow(2)).sum(),
                                       use_reentrant=False)
        return total
