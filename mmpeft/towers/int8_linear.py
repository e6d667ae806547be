"""A frozen LLM.int8() layer that keeps nothing of its input for the backward.

bitsandbytes' ``Linear8bitLt`` computes with LLM.int8() (bitsandbytes 0.50.2, ``bitsandbytes/autograd/_functions.py``):
on CUDA ``MatMul8bitLt`` quantises the input rowwise to int8 (columns with a value above ``threshold`` stay in
fp16) and multiplies with the int8 weight codes; on the CPU its training path ``MatMul8bitFp`` dequantises the
weight and multiplies in the input's dtype. Both keep the input on the autograd context as plain attributes
(``ctx.tensors = (CAt, subA, A)``, ``ctx.A = A``) for a weight gradient a frozen base never needs, and attributes
bypass saved-tensor hooks: under activation checkpointing every int8 layer's input stayed alive for the whole
forward (Llama-3-8B shapes on an H200: 1.89x bf16's peak memory, docs/benchmarks.md).

``FrozenInt8Linear`` is a ``Linear8bitLt`` (``dequantized_weight`` and exports read it as one) whose forward
computes what bitsandbytes' training path computes on that device, the same kernels in the same order, through
``_FrozenInt8Matmul`` (also in eval mode, where bitsandbytes' CPU path would switch to int8 activations): the
backward gives only the input gradient, ``grad_output @ dequantised W`` (bitsandbytes' own formula), and saves only
the weight codes and row scales. Moving the layer with its parent (``model.to("cuda")``, as Lightning does) moves
the codes and scales that ``Linear8bitLt`` keeps outside its parameters, in ``state``, too.
"""

from __future__ import annotations

from typing import Any

import bitsandbytes as bnb
import torch
import torch.nn.functional as F


def dequantized(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[N, K]`` int8 codes with ``[N]`` absmax row scales -> ``[N, K]`` weight in ``dtype`` (bitsandbytes' rule)."""
    return codes.to(dtype).mul_(scales.unsqueeze(1).mul(1.0 / 127.0))


class _FrozenInt8Matmul(torch.autograd.Function):
    """``x [M, K]`` times frozen int8 ``codes [N, K]`` (row ``scales [N]``) + ``bias`` -> ``[M, N]``, ``x``'s dtype."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, threshold: float,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(codes, scales)
        ctx.dtype = x.dtype
        if x.device.type != "cuda":  # bitsandbytes' CPU/XPU training path (MatMul8bitFp)
            return F.linear(x, dequantized(codes, scales, x.dtype), bias)
        x_codes, x_scales, outliers = bnb.functional.int8_vectorwise_quant(x.to(torch.float16), threshold=threshold)
        if threshold > 0.0:
            out, _ = torch.ops.bitsandbytes.int8_mixed_scaled_mm(x, x_codes, codes, x_scales, scales, outliers, bias)
            return out
        return torch.ops.bitsandbytes.int8_scaled_mm.default(x_codes, codes, x_scales, scales, bias=bias,
                                                             dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        codes, scales = ctx.saved_tensors
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output.to(ctx.dtype) @ dequantized(codes, scales, ctx.dtype)
        if ctx.needs_input_grad[4]:
            grad_bias = grad_output.sum(0)
        return grad_x, None, None, None, grad_bias


class FrozenInt8Linear(bnb.nn.Linear8bitLt):
    """``Linear8bitLt`` with frozen int8 weights (``has_fp16_weights=False``): ``[..., in] -> [..., out]`` in the
    input's dtype, LLM.int8() as bitsandbytes computes it, input gradient only, no input kept for the backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.CB is not None:  # the codes and scales move to the layer's state (as Linear8bitLt does)
            self.init_8bit_state()
        state = self.state
        if state.CB is None or state.SCB is None:
            raise RuntimeError("FrozenInt8Linear holds no int8 codes; build it with mmpeft.towers.quantize")
        bias = None if self.bias is None else self.bias.to(x.dtype)
        shape = x.shape
        if x.numel() == 0:  # as bitsandbytes: an empty batch gives an empty output
            return x.new_zeros(*shape[:-1], self.out_features)
        out = _FrozenInt8Matmul.apply(x.reshape(-1, shape[-1]), state.CB, state.SCB, state.threshold, bias)
        return out.reshape(*shape[:-1], self.out_features)

    def _apply(self, fn, recurse: bool = True):
        """After ``.to()`` / ``.cuda()`` of this layer or a parent (which move only the parameters): the state's
        codes are the weight's data again and its row scales follow the weight's device (kept in float32)."""
        super()._apply(fn, recurse)
        state = self.state
        if state.CB is not None:
            state.CB = self.weight.data
        if state.SCB is not None:
            state.SCB = state.SCB.to(self.weight.device)
        return self
