"""Effective weight deltas of peft adapter layers: ``W_adapted - W_base``, for regularisers (L2-SP, EWC).

``delta_weight`` materialises the delta in the base weight's layout (``[out, in]`` for Linear, the conv kernel
shape for convolutions); ``delta_sq_norm`` gives ``||delta||_F^2`` without materialising it where the structure
allows (LoRA: ``s^2 tr((B^T B)(A A^T))`` on ``r x r`` matrices; IA3: per-row/column scale times weight norms).
Biases are not part of the delta (IA3's output scaling also scales a bias; that part is ignored).
"""

from __future__ import annotations

import torch
from peft.tuners.ia3 import IA3Layer
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

ADAPTER = "default"


def adapter_layers(module: nn.Module) -> dict[str, BaseTunerLayer]:
    """``{module name: peft layer}`` for every adapted layer inside ``module``."""
    return {n: m for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)}


def base_weight(layer: BaseTunerLayer) -> torch.Tensor:
    return layer.get_base_layer().weight


def _is_dora(layer: BaseTunerLayer) -> bool:
    return isinstance(layer, LoraLayer) and bool(layer.use_dora.get(ADAPTER, False))


def delta_weight(layer: BaseTunerLayer) -> torch.Tensor:
    """``W_adapted - W_base`` of one layer, differentiable w.r.t. the adapter parameters."""
    w = base_weight(layer)
    if isinstance(layer, IA3Layer):
        scale = layer.ia3_l[ADAPTER]  # (out, 1) scales outputs, (1, in) scales inputs (feed-forward)
        return w * (scale.view(scale.shape + (1,) * (w.dim() - 2)) - 1)
    delta = layer.get_delta_weight(ADAPTER)
    if _is_dora(layer):
        if w.dim() != 2:
            raise NotImplementedError("DoRA deltas are implemented for Linear layers")
        combined = w + delta  # [out, in]
        magnitude = layer.lora_magnitude_vector[ADAPTER].weight  # [out]
        return (magnitude / combined.norm(dim=1)).unsqueeze(1) * combined - w
    return delta


def delta_sq_norm(layer: BaseTunerLayer) -> torch.Tensor:
    """``||W_adapted - W_base||_F^2`` (a scalar), cheaply where possible."""
    if isinstance(layer, LoraLayer) and not _is_dora(layer) and ADAPTER in layer.lora_A:
        a = layer.lora_A[ADAPTER].weight.flatten(1)  # [r, in * k * k]
        b = layer.lora_B[ADAPTER].weight.flatten(1)  # [out, r]
        s = layer.scaling[ADAPTER]
        return s * s * ((b.T @ b) * (a @ a.T)).sum()
    if isinstance(layer, IA3Layer):
        w = base_weight(layer).detach().flatten(1)  # [out, in * k * k]
        scale = layer.ia3_l[ADAPTER].flatten()
        norms = (w * w).sum(1) if not layer.is_feedforward else (w * w).view(w.shape[0], scale.numel(), -1).sum((0, 2))
        return ((scale - 1) ** 2 * norms).sum()
    return delta_weight(layer).pow(2).sum()
