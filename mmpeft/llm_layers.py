"""The LLM's decoder layers, and activation checkpointing over a share of them (pure PyTorch + transformers)."""

from __future__ import annotations

import math

import torch

from mmpeft.vlm import VisionLanguageModel


def decoder_layers(vlm: VisionLanguageModel) -> list[torch.nn.Module]:
    """The LLM's decoder layers (the ``ModuleList`` under its decoder), in order."""
    decoder = vlm.llm.decoder()
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return list(layers)
    raise ValueError(f"cannot find the decoder layers of {type(decoder).__name__} (looked for layers, h, blocks)")


def enable_gradient_checkpointing(vlm: VisionLanguageModel, fraction: float = 1.0) -> int:
    """Checkpoint the first ``ceil(fraction * L)`` LLM decoder layers; returns how many."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"model.gradient_checkpointing={fraction}: give true/false or a fraction in (0, 1]")
    model = vlm.llm.model
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name; earlier 5.x releases lack it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layers(vlm)
    keep = math.ceil(fraction * len(layers))
    for layer in layers[keep:]:  # transformers' layers read this flag on every call
        layer.gradient_checkpointing = False
    return keep
