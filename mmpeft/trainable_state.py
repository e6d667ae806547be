"""What a checkpoint of a VisionLanguageModel holds: its trainable state, defined once.

``trainable_state(vlm)`` is the one definition. Keyed by the names of ``vlm.state_dict()``, it holds

    projector.*         the projector's whole state (trained or not: no base weights rebuild it; buffers included)
    soft_prompt.*       the soft prompt, when the model has one
    <tower>.model.*     the whole state of a fully trained tower (``vlm.fully_trained_modules()``)
    <tower>.model.*     the adapter weights of a peft-adapted tower (``adapter_parameter_names``), nothing of its base

Everything else is a frozen base, rebuilt from the model config. Derived from it: the keys ``VLMModule`` keeps in a
Lightning checkpoint (``"vlm." + name``) and the files of a model directory (``mmpeft.checkpoint.model_files``:
adapters in peft's layout, the rest in ``trainable.safetensors``). A new trainable component is added here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mmpeft.adapters.inject import adapter_parameter_names

if TYPE_CHECKING:
    from mmpeft.vlm import VisionLanguageModel


def whole_modules(vlm: VisionLanguageModel) -> dict[str, nn.Module]:
    """``{name in the VLM: module}`` of the modules whose whole state is trainable state: the projector and every
    fully trained tower."""
    return {"projector": vlm.projector, **vlm.fully_trained_modules()}


def trainable_state(vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
    """The trainable state of ``vlm`` (module docstring), ``{VLM state-dict name: tensor}``, detached (not copied)."""
    state: dict[str, torch.Tensor] = {}
    for prefix, module in whole_modules(vlm).items():
        state.update({f"{prefix}.{k}": v.detach() for k, v in module.state_dict().items()})
    parameters = dict(vlm.named_parameters())
    for name in adapter_parameter_names(vlm):  # peft layers in the towers, and the soft prompt
        state.setdefault(name, parameters[name].detach())
    return state
