"""Gradient clipping with the fused AdamW under bf16 autocast: Lightning's mixed-precision plugin refuses it (the
optimizer unscales in its step), though bf16 has no scaler; VLMModule clips itself there (mmpeft.module)."""

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from mmpeft.module import clip_unscaled_gradients, has_grad_scaler


class FakeTrainer:
    def __init__(self, precision: str):
        self.precision_plugin = MixedPrecision(precision, device="cpu")


def fused_with_grads(scale: float):
    weights = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    for w in weights:
        w.grad = torch.full_like(w, scale)
    return weights, torch.optim.AdamW(weights, fused=True)


def test_lightning_refuses_what_mmpeft_clips_exactly():
    weights, optimizer = fused_with_grads(3.0)
    plugin = FakeTrainer("bf16-mixed").precision_plugin
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        plugin.clip_gradients(optimizer, clip_val=1.0)  # the refusal the GPU preset ran into
    assert not has_grad_scaler(FakeTrainer("bf16-mixed"))
    assert clip_unscaled_gradients(FakeTrainer("bf16-mixed"), optimizer, 1.0, "norm")
    total = torch.cat([w.grad.flatten() for w in weights]).norm()
    torch.testing.assert_close(total, torch.tensor(1.0))
    assert all(torch.allclose(w.grad, torch.full_like(w, 1.0 / 17**0.5)) for w in weights), "scaled uniformly"

    weights, optimizer = fused_with_grads(3.0)
    assert clip_unscaled_gradients(FakeTrainer("bf16-mixed"), optimizer, 0.5, "value")
    assert all(torch.equal(w.grad, torch.full_like(w, 0.5)) for w in weights)


def test_other_cases_are_left_to_lightning():
    weights = [torch.nn.Parameter(torch.zeros(2))]
    weights[0].grad = torch.full((2,), 9.0)
    plain = torch.optim.AdamW(weights)  # not fused: Lightning's own clipping works
    assert not clip_unscaled_gradients(FakeTrainer("bf16-mixed"), plain, 1.0, "norm")
    assert torch.equal(weights[0].grad, torch.full((2,), 9.0))

    class NoPlugin:
        precision_plugin = None

    assert not clip_unscaled_gradients(NoPlugin(), torch.optim.AdamW(weights, fused=True), 1.0, "norm")
