"""A frozen linear layer whose matmuls run in FP8 with rowwise scales (torchao's float8 casts).

``FrozenFloat8Linear`` keeps its weight in the tower's dtype (bf16): nothing is stored in FP8, so saving,
fingerprints and exports see the usual weight. Each call casts the input and the weight to ``float8_e4m3fn``
with one scale per row (per token of the input, per output channel of the weight; scales rounded down to powers
of two), exactly as torchao's ``Float8LinearConfig.from_recipe_name("rowwise")`` casts them, and multiplies them
with ``torch._scaled_mm`` (through torchao's ``Float8TrainingTensor``).

What differs from torchao's ``Float8Linear``: the weight is frozen, so the backward computes only the input
gradient (``grad_output @ W`` in FP8, the grad output scaled per row, the weight per input channel), never the
weight gradient torchao's training layer always computes, and only the weight is kept for it (not the input).
That saves a third of the layer's backward matmul work and its saved activations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn


class RowwiseCasts(NamedTuple):
    """What the rowwise recipe casts with, resolved once per layer (no imports inside a compiled forward)."""

    recipe: Any  # torchao Float8LinearConfig.from_recipe_name("rowwise")
    roles: Any  # torchao GemmInputRole
    axiswise: Any  # ScalingGranularity.AXISWISE
    cast: Callable[..., Any]  # hp_tensor_to_float8_dynamic
    mm_config: Any  # LinearMMConfig


def rowwise_casts(emulate: bool) -> RowwiseCasts:
    """torchao's rowwise recipe (fast accumulation in the forward, as the recipe says); ``emulate``: the matmuls
    run in fp32 on FP8-rounded operands (any device; for CPU tests)."""
    from torchao.float8.config import Float8LinearConfig, ScalingGranularity
    from torchao.float8.float8_scaling_utils import hp_tensor_to_float8_dynamic
    from torchao.float8.float8_training_tensor import GemmInputRole, LinearMMConfig, ScaledMMConfig

    recipe = Float8LinearConfig.from_recipe_name("rowwise")
    mm_config = LinearMMConfig(
        ScaledMMConfig(emulate, recipe.gemm_config_output.use_fast_accum, False, False),
        ScaledMMConfig(emulate, recipe.gemm_config_grad_input.use_fast_accum, False, False),
        ScaledMMConfig(emulate, recipe.gemm_config_grad_weight.use_fast_accum, False, False),
    )
    return RowwiseCasts(recipe, GemmInputRole, ScalingGranularity.AXISWISE, hp_tensor_to_float8_dynamic, mm_config)


def weight_cast_for_output(casts: RowwiseCasts, weight: torch.Tensor):
    """``weight [N, K]`` as the forward multiplies it: ``W^T`` in FP8, one scale per output channel."""
    recipe = casts.recipe
    return casts.cast(weight.t(), recipe.cast_config_weight.target_dtype, casts.mm_config,
                      gemm_input_role=casts.roles.WEIGHT, scaling_granularity=casts.axiswise, axiswise_dim=0,
                      round_scales_to_power_of_2=recipe.round_scales_to_power_of_2)


def weight_cast_for_grad_input(casts: RowwiseCasts, weight: torch.Tensor):
    """``weight [N, K]`` as the input gradient multiplies it: in FP8, one scale per input channel."""
    recipe = casts.recipe
    return casts.cast(weight.t(), recipe.cast_config_weight_for_grad_input.target_dtype, casts.mm_config,
                      gemm_input_role=casts.roles.WEIGHT, scaling_granularity=casts.axiswise, axiswise_dim=-1,
                      round_scales_to_power_of_2=recipe.round_scales_to_power_of_2)


class _FrozenFloat8Matmul(torch.autograd.Function):
    """``[M, K] x [N, K]^T -> [M, N]`` in FP8; the backward returns only the input gradient ``[M, K]``. ``cached``:
    the weight's two casts made beforehand (``FrozenFloat8Linear.cache_weight_casts``), or None to cast it here."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, casts: RowwiseCasts,
                cached: tuple[Any, Any] | None) -> torch.Tensor:
        ctx.casts, ctx.cached = casts, cached is not None
        ctx.save_for_backward(weight if cached is None else cached[1])
        recipe, cfg = casts.recipe, casts.mm_config
        x8 = casts.cast(x, recipe.cast_config_input.target_dtype, cfg, gemm_input_role=casts.roles.INPUT,
                        scaling_granularity=casts.axiswise, axiswise_dim=-1,
                        round_scales_to_power_of_2=recipe.round_scales_to_power_of_2)
        w8_t = weight_cast_for_output(casts, weight) if cached is None else cached[0]
        return torch.mm(x8, w8_t)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (saved,) = ctx.saved_tensors
        casts = ctx.casts
        recipe, cfg = casts.recipe, casts.mm_config
        g8 = casts.cast(grad_output.contiguous(), recipe.cast_config_grad_output.target_dtype, cfg,
                        gemm_input_role=casts.roles.GRAD_OUTPUT, scaling_granularity=casts.axiswise,
                        axiswise_dim=-1, round_scales_to_power_of_2=recipe.round_scales_to_power_of_2)
        w8_t = saved if ctx.cached else weight_cast_for_grad_input(casts, saved)
        return torch.mm(g8, w8_t.t()), None, None, None


def _drop_weight_casts(module: FrozenFloat8Linear, incompatible_keys: Any) -> None:
    module.cache_weight_casts(False)


class FrozenFloat8Linear(nn.Linear):
    """``nn.Linear`` with frozen weights whose forward and input-gradient matmuls run in FP8 (rowwise scales).

    Shapes as ``nn.Linear``: ``[..., in_features] -> [..., out_features]``; both feature counts must be multiples
    of 16 (``torch._scaled_mm``). The output has the input's dtype (under autocast, the autocast dtype), the bias
    is added in that dtype. A subclass of ``nn.Linear``, so peft adapters wrap it like any linear layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, emulate: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.emulate = emulate
        self._casts = rowwise_casts(emulate)
        self._cached: tuple[Any, Any] | None = None
        self._cached_id, self._cached_ptr, self._cached_version = 0, 0, 0  # of the weight cast (ints, no reference)
        self.register_load_state_dict_post_hook(_drop_weight_casts)

    def cache_weight_casts(self, enabled: bool = True) -> None:
        """Keep the weight's two FP8 casts (for the output, for the input gradient) rather than casting the frozen
        weight at every call: one byte per weight each, the bf16 weight's size again, for the cast kernels' time
        (a Llama-2-7B step on an H200: 438 -> 402 ms, docs/benchmarks.md). The results are identical.

        They are casts of the weight as it is now: caching again after changing it is the caller's part; loading
        a state dict into the layer or moving it (``.to``) drops them, and ``weight_casts_stale`` tells other
        changes (``VLMModule`` caches from the start of a fit to its end and casts again a stale layer's weight
        before each step). ``enabled=False`` drops them."""
        if not enabled:
            self._cached = None
            return
        with torch.no_grad():
            self._cached = (weight_cast_for_output(self._casts, self.weight),
                            weight_cast_for_grad_input(self._casts, self.weight))
        self._cached_id, self._cached_ptr, self._cached_version = (id(self.weight), self.weight.data_ptr(),
                                                                   self.weight._version)

    @property
    def weight_casts_cached(self) -> bool:
        return self._cached is not None

    def weight_casts_stale(self) -> bool:
        """Whether cached casts are of another weight than the layer's now: a new parameter, new storage, or an
        in-place change autograd saw (``copy_`` under ``no_grad``). An edit through ``.data`` is not seen."""
        # no container built: this runs for every FP8 layer before each step (garbage-collector pressure)
        weight = self.weight
        return self._cached is not None and (id(weight) != self._cached_id or weight.data_ptr() != self._cached_ptr
                                             or weight._version != self._cached_version)

    def _apply(self, fn, recurse=True):
        self._cached = None  # casts on the old device or of the old dtype
        return super()._apply(fn, recurse)

    @classmethod
    def from_linear(cls, layer: nn.Linear, emulate: bool = False) -> FrozenFloat8Linear:
        """The same parameters (shared, not copied) behind an FP8 forward."""
        with torch.device("meta"):
            new = cls(layer.in_features, layer.out_features, bias=False, emulate=emulate)
        new.weight = layer.weight
        new.bias = layer.bias
        new.train(layer.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # as F.linear under autocast: compute in the autocast dtype
            x = x.to(torch.get_autocast_dtype(x.device.type))
        elif x.dtype != self.weight.dtype:
            x = x.to(self.weight.dtype)
        shape = x.shape
        with torch.autocast(x.device.type, enabled=False):
            out = _FrozenFloat8Matmul.apply(x.reshape(-1, shape[-1]), self.weight, self._casts, self._cached)
        out = out.reshape(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, fp8=rowwise{', emulated' if self.emulate else ''}"
                f"{', weight casts cached' if self._cached is not None else ''}")
