"""Every speed option of VLMModule leaves the loss and gradients unchanged (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from conftest import build_vlm, make_batch

from mmpeft.adapters import AdapterSpec
from mmpeft.llm_layers import decoder_layers
from mmpeft.module import VLMModule

SPEC = AdapterSpec("lora", r=4, alpha=8)
ROWS = [(1, " what color is the circle?", " red"), (1, " a much longer question that pads others?", " yes.")]


def _module(tiny, **kwargs) -> VLMModule:
    vlm = build_vlm(tiny, llm_spec=SPEC, vision_spec=SPEC, pack_sequences=kwargs.pop("pack_sequences", False))
    torch.manual_seed(1)
    for p in vlm.parameters():  # LoRA B starts at zero: make the adapters matter
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    module = VLMModule(vlm, **kwargs)
    module.train()
    return module


def _loss_and_grads(module: VLMModule, batch: dict):
    module.zero_grad()
    loss = module._losses(batch)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


def _batch(module: VLMModule) -> dict:
    batch = make_batch(module.vlm, ROWS)
    batch["has_image"] = torch.ones(len(ROWS), dtype=torch.bool)
    return batch


@pytest.mark.parametrize("option", [{"gradient_checkpointing": True}, {"gradient_checkpointing": 0.5},
                                    {"pack_sequences": True},
                                    {"pack_sequences": True, "gradient_checkpointing": 0.5}])
def test_option_leaves_loss_and_grads_unchanged(tiny, option):
    reference = _module(tiny)
    fast = _module(tiny, **option)
    batch = _batch(reference)
    loss_a, grads_a = _loss_and_grads(reference, batch)
    loss_b, grads_b = _loss_and_grads(fast, batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_partial_checkpointing_covers_the_first_layers(tiny):
    module = _module(tiny, gradient_checkpointing=0.5)
    flags = [layer.gradient_checkpointing for layer in decoder_layers(module.vlm)]
    assert flags == [True, False]
    with pytest.raises(ValueError, match="gradient_checkpointing=1.5"):
        _module(tiny, gradient_checkpointing=1.5)


def test_compiled_llm_layers_give_the_same_loss(tiny):
    """Traced by dynamo + AOT autograd (``aot_eager``: inductor's C++ build takes ~90 s on 2 cores; the GPU
    benchmark runs inductor)."""
    reference = _module(tiny)
    compiled = _module(tiny, compile_llm_layers="aot_eager", pack_sequences=True)
    batch = _batch(reference)
    loss_b, grads_b = _loss_and_grads(compiled, batch)
    loss_a, grads_a = _loss_and_grads(reference, batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=1e-5)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-3, atol=1e-5, msg=name)
