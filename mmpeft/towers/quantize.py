"""Low-precision frozen base weights: a tower's ``quantize`` option (``fp8``, ``nf4``, ``int8``).

Each scheme replaces the frozen ``nn.Linear`` layers of a tower in place by a low-precision layer that is still an
``nn.Linear`` subclass, so peft's adapters (LoRA, DoRA, IA3, ...) wrap them as usual and train in full precision
on top; ``disabled_adapters`` then runs the exact quantised base:

- ``fp8`` (speed, Hopper-class GPUs): ``FrozenFloat8Linear`` (``mmpeft.towers.fp8_linear``): weights stay in the
  tower's dtype; the forward and input-gradient matmuls run in FP8 with rowwise scales (torchao's casts).
- ``nf4`` (memory): bitsandbytes ``Linear4bit``, QLoRA's recipe: 4-bit NormalFloat codes in blocks of 64 with
  double quantisation of the block scales, computing in the tower's dtype (about 0.52 bytes per weight).
- ``int8`` (memory): ``FrozenInt8Linear`` (``mmpeft.towers.int8_linear``), bitsandbytes' ``Linear8bitLt``
  (LLM.int8(): rowwise absmax int8 weights, outlier threshold 6.0) without the input it keeps for a weight gradient.

The weights are quantised where the tower is built (on the CPU, deterministically), so a tower's fingerprint
is that of its quantised weights and loads compare like with like. Layers that are kept in the tower's dtype,
and why: those inside ``nn.MultiheadAttention`` (it reads their weights directly, never calls them), and for
``fp8`` those whose feature counts are not multiples of 16 (``torch._scaled_mm``). Embeddings, convolutions,
norms and the LM head are never quantised (the LLM tower quantises its decoder only, as QLoRA keeps ``lm_head``).

``dequantized_linears`` swaps plain ``nn.Linear`` layers holding the dequantised weights in for a while: what
``export`` merges adapters into, so an export is a plain bf16 model of exactly the base the adapters trained on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

SCHEMES = ("fp8", "nf4", "int8")
FP8_EMULATE_ENV = "MMPEFT_FP8_EMULATE"
_PIP = {"fp8": "torchao==0.18.0", "nf4": "bitsandbytes==0.50.2", "int8": "bitsandbytes==0.50.2"}


@dataclass
class QuantizationReport:
    """What ``quantize_linears`` did to one tower."""

    scheme: str
    layers: int = 0
    quantized_weights: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # layer name -> why it stayed in the tower's dtype

    def summary(self) -> str:
        kept = f"; kept {len(self.kept)} in full precision ({sorted(set(self.kept.values()))})" if self.kept else ""
        return f"{self.scheme}: {self.layers} linear layers, {self.quantized_weights:,} weights{kept}"


def check_scheme(scheme: str | None, owner: str) -> str | None:
    """``scheme`` checked (``None`` passes): known, its library importable, and for ``fp8`` a GPU with FP8 tensor
    cores (or the CPU emulation asked for with ``MMPEFT_FP8_EMULATE=1``).

    Raises:
        ValueError: unknown scheme, or fp8 on a machine without FP8 matmuls; the message names the option.
        ImportError: the scheme's library is missing; the message names the pip command.
    """
    if scheme is None or scheme == "none":
        return None
    if scheme not in SCHEMES:
        raise ValueError(f"{owner}: quantize={scheme!r} is not a scheme; use one of {list(SCHEMES)} or leave it "
                         "unset (weights in the tower's dtype)")
    module = "torchao" if scheme == "fp8" else "bitsandbytes"
    try:
        __import__(module)
    except ImportError as e:
        raise ImportError(f"{owner}: quantize={scheme!r} needs {module}: pip install {_PIP[scheme]} "
                          f"(requirements-quant.txt) ({e})") from e
    if scheme == "fp8" and not fp8_emulated():
        if not torch.cuda.is_available():
            raise ValueError(
                f"{owner}: quantize='fp8' needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9 or "
                "newer: H100/H200, L4/L40, RTX 40xx), and torch sees no CUDA device here. Use quantize='nf4' or "
                f"'int8', or leave it unset. ({FP8_EMULATE_ENV}=1 emulates FP8 on any device: tests only, slow.)")
        capability = torch.cuda.get_device_capability()
        if capability < (8, 9):
            raise ValueError(
                f"{owner}: quantize='fp8' needs FP8 tensor cores (compute capability 8.9 or newer); "
                f"{torch.cuda.get_device_name()} has {capability[0]}.{capability[1]}. Use quantize='nf4' or 'int8', "
                "or leave it unset.")
    return scheme


def fp8_emulated() -> bool:
    """``MMPEFT_FP8_EMULATE=1``: FP8 layers emulate their matmuls in fp32 (any device)."""
    return os.environ.get(FP8_EMULATE_ENV, "") == "1"


def _linears(module: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Linear, bool]]:
    """``(name, parent, attribute, layer, inside_mha)`` for every plain ``nn.Linear`` under ``module``."""
    mha = {id(m) for sub in module.modules() if isinstance(sub, nn.MultiheadAttention) for m in sub.modules()}
    for parent_name, parent in list(module.named_modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not isinstance(child, quantized_types()):
                name = f"{parent_name}.{attr}" if parent_name else attr
                yield name, parent, attr, child, id(child) in mha


def quantized_types() -> tuple[type[nn.Module], ...]:
    """The layer classes the schemes put in (only those whose library is installed)."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    types: list[type[nn.Module]] = [FrozenFloat8Linear]
    try:
        import bitsandbytes as bnb

        types += [bnb.nn.Linear4bit, bnb.nn.Linear8bitLt]
    except ImportError:
        pass
    return tuple(types)


@torch.no_grad()
def quantize_linears(module: nn.Module, scheme: str, owner: str) -> QuantizationReport:
    """Replace the frozen ``nn.Linear`` layers of ``module`` in place by ``scheme``'s layers (module doc).

    Call on a frozen module on the CPU. The bnb layers quantise as they are placed (``.to("cpu")``).

    Raises:
        ValueError: no layer of ``module`` can take the scheme (e.g. a convolutional encoder): the message names
            the tower and says to leave its ``quantize`` unset.
    """
    report = QuantizationReport(scheme)
    for name, parent, attr, layer, inside_mha in list(_linears(module)):
        if inside_mha:
            report.kept[name] = "nn.MultiheadAttention reads its weights directly"
            continue
        if scheme == "fp8" and (layer.in_features % 16 or layer.out_features % 16):
            report.kept[name] = "fp8 needs feature counts divisible by 16"
            continue
        setattr(parent, attr, _quantized(layer, scheme))
        report.layers += 1
        report.quantized_weights += layer.weight.numel()
    if not report.layers:
        reasons = f" (kept: {sorted(set(report.kept.values()))})" if report.kept else ""
        raise ValueError(f"{owner}: quantize={scheme!r} found no nn.Linear layer to quantise{reasons}; convolutions "
                         "and embeddings are never quantised. Leave quantize unset for this tower.")
    return report


def _quantized(layer: nn.Linear, scheme: str) -> nn.Linear:
    weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    if scheme == "fp8":
        from mmpeft.towers.fp8_linear import FrozenFloat8Linear

        new: nn.Linear = FrozenFloat8Linear.from_linear(layer, emulate=fp8_emulated())
        new.requires_grad_(False)
        return new
    import bitsandbytes as bnb

    if scheme == "nf4":
        new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=bias is not None,
                                compute_dtype=weight.dtype, quant_type="nf4", compress_statistics=True,
                                device="meta")
        new.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4",
                                       compress_statistics=True)
        # bitsandbytes repacks 4-bit weights in place at the first CPU forward in eval mode without gradients,
        # rounding the block scales to bf16: the base would change under the run (train and eval forwards, the
        # fingerprint, exports would disagree). The repacking only speeds up CPU inference: off.
        new.support_avx512bf16_for_cpu = False
    else:
        from mmpeft.towers.int8_linear import FrozenInt8Linear

        new = FrozenInt8Linear(layer.in_features, layer.out_features, bias=bias is not None,
                               has_fp16_weights=False, threshold=6.0, device="meta")
        # quantised here, on the weight's own device: Int8Params quantises in ``.to()`` only when it moves off the
        # CPU (bitsandbytes 0.50.2), so a tower built on a GPU held bf16 weights until its first forward (its
        # state_dict, fingerprint and dequantized_weight saw no int8 codes)
        codes, scales, _ = bnb.functional.int8_vectorwise_quant(weight.to(torch.float16))
        new.weight = bnb.nn.Int8Params(codes, requires_grad=False, has_fp16_weights=False, CB=codes, SCB=scales)
        new.compute_dtype = weight.dtype  # what dequantized_weight gives back (Linear4bit has the same attribute)
    if bias is not None:
        new.bias = nn.Parameter(bias.clone(), requires_grad=False)
    new = new.to(weight.device)  # bitsandbytes quantises NF4 here
    if scheme == "int8":
        # the int8 codes and row scales move to the layer's state now rather than at its first forward, so that
        # peft (DoRA's weight norm) and dequantized_weight find them before any forward ran
        new.init_8bit_state()
    new.train(layer.training)
    return new


def quantization_scheme(module: nn.Module) -> str | None:
    """The scheme of the first quantised layer under ``module`` (``None`` when none is)."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    for layer in module.modules():
        if isinstance(layer, FrozenFloat8Linear):
            return "fp8"
        # by class name along the MRO: no bitsandbytes import where it is not installed
        kinds = {c.__name__ for c in type(layer).__mro__ if c.__module__.startswith("bitsandbytes")}
        if "Linear4bit" in kinds:
            return "nf4"
        if "Linear8bitLt" in kinds:
            return "int8"
    return None


def cache_fp8_weight_casts(module: nn.Module, enabled: bool) -> list[nn.Module]:
    """``FrozenFloat8Linear.cache_weight_casts(enabled)`` on every FP8 layer under ``module``; returns them."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    layers = [m for m in module.modules() if isinstance(m, FrozenFloat8Linear)]
    for layer in layers:
        layer.cache_weight_casts(enabled)
    return layers


def recast_stale_fp8_weights(layers: list[nn.Module]) -> int:
    """Cast again the weights of those ``layers`` (from ``cache_fp8_weight_casts``) whose cached casts are stale
    (``FrozenFloat8Linear.weight_casts_stale``); returns how many. Host-side checks only: no device sync."""
    stale = [layer for layer in layers if layer.weight_casts_stale()]
    for layer in stale:
        layer.cache_weight_casts(True)
    return len(stale)


def check_shardable(module: nn.Module) -> None:
    """Refuse to shard (FSDP) a module with bitsandbytes layers: they keep their scales outside the parameters
    FSDP shards (``Linear4bit``'s ``quant_state``, ``Linear8bitLt``'s ``state.SCB``). ``fp8`` keeps plain weights."""
    scheme = quantization_scheme(module)
    if scheme in ("nf4", "int8"):
        raise ValueError(f"a tower with quantize={scheme!r} cannot train under FSDP (trainer/fsdp.yaml): "
                         "bitsandbytes keeps its scales outside the parameters FSDP shards. Use DDP "
                         "(--config trainer/ddp.yaml) or leave the towers' quantize unset")


@torch.no_grad()
def dequantized_weight(layer: nn.Linear) -> torch.Tensor:
    """``[out, in]`` weight a quantised layer computes with, in its compute dtype (``weight`` itself for fp8)."""
    from mmpeft.towers.fp8_linear import FrozenFloat8Linear

    if isinstance(layer, FrozenFloat8Linear):
        return layer.weight.detach()
    import bitsandbytes as bnb

    if isinstance(layer, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(layer.compute_dtype)
    if isinstance(layer, bnb.nn.Linear8bitLt):
        scales = layer.state.SCB if layer.state.SCB is not None else layer.weight.SCB
        dtype = getattr(layer, "compute_dtype", None) or torch.bfloat16
        return bnb.functional.int8_vectorwise_dequant(layer.weight.data, scales).to(dtype)
    raise TypeError(f"{type(layer).__name__} is not a quantised layer")


@contextlib.contextmanager
def dequantized_linears(module: nn.Module, dtype: torch.dtype | None = None) -> Iterator[int]:
    """While inside, every quantised layer under ``module`` (also as a peft layer's ``base_layer``) is a plain
    ``nn.Linear`` with the dequantised weight (in ``dtype``, default the layer's compute dtype); yields how many.
    The quantised layers are put back after."""
    types = quantized_types()
    swaps = [(parent, attr, child) for _, parent in list(module.named_modules())
             for attr, child in list(parent.named_children()) if isinstance(child, types)]
    try:
        for parent, attr, layer in swaps:
            weight = dequantized_weight(layer)
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
            plain.weight = nn.Parameter(weight.to(dtype or weight.dtype), requires_grad=False)
            if layer.bias is not None:
                plain.bias = nn.Parameter(layer.bias.detach().to(dtype or weight.dtype), requires_grad=False)
            setattr(parent, attr, plain)
        yield len(swaps)
    finally:
        for parent, attr, layer in swaps:
            setattr(parent, attr, layer)
