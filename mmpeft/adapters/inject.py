"""Put adapters into a tower you don't own, through peft's functional API, and switch them off exactly.

peft's ``inject_adapter_in_model`` works on open_clip, timm and HF modules alike. It sets ``requires_grad=False``
on every non-adapter parameter of the module it is given, so it is applied per tower, never to the whole VLM
(the projector would be frozen with it).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import (
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.tuners_utils import BaseTunerLayer, cast_adapter_dtype
from torch import nn
from transformers.pytorch_utils import Conv1D

from mmpeft.adapters.soft_prompt import SoftPrompt
from mmpeft.adapters.spec import AdapterSpec
from mmpeft.towers.quantize import dequantized_linears, quantization_scheme

ADAPTABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, Conv1D)


def resolve_targets(module: nn.Module, spec: AdapterSpec, default_targets: list[str]) -> list[str]:
    """Names of the modules in ``module`` that ``spec`` adapts (its regex, else the tower's defaults).

    Raises:
        ValueError: the regex matches no adaptable layer; the message lists the adaptable names.
    """
    if spec.targets is None:
        if not default_targets:
            raise ValueError(f"{type(module).__name__} has no default adapter targets; set AdapterSpec.targets")
        return list(default_targets)
    try:
        pattern = re.compile(spec.targets)
    except re.error as e:
        raise ValueError(f"AdapterSpec.targets={spec.targets!r} is not a valid regex: {e}") from e
    adaptable = [n for n, m in module.named_modules() if isinstance(m, ADAPTABLE_TYPES)]
    names = [n for n in adaptable if pattern.search(n)]
    if not names:
        sample = adaptable[:12] + (["..."] if len(adaptable) > 12 else [])
        raise ValueError(
            f"AdapterSpec.targets={spec.targets!r} matches no adaptable layer (Linear/Conv) of "
            f"{type(module).__name__}. Names it can match (re.search) include: {sample}"
        )
    return names


def peft_config(spec: AdapterSpec, targets: list[str]) -> PeftConfig:
    """The peft config for a spec. Exact module names are passed so peft adapts exactly ``targets``."""
    if spec.method in ("lora", "dora"):
        return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                          use_dora=spec.method == "dora", init_lora_weights=spec.init_weights)
    if spec.method == "ia3":
        ff = [t for t in targets if re.search(spec.ia3_feedforward, t)]
        return IA3Config(target_modules=targets, feedforward_modules=ff, init_ia3_weights=spec.init_weights)
    if spec.method == "loha":
        return LoHaConfig(r=spec.r, alpha=spec.alpha, rank_dropout=spec.dropout, target_modules=targets,
                          init_weights=spec.init_weights)
    if spec.method == "lokr":
        return LoKrConfig(r=spec.r, alpha=spec.alpha, rank_dropout=spec.dropout, target_modules=targets,
                          init_weights=spec.init_weights)
    raise ValueError(f"AdapterSpec.method={spec.method!r} is not a peft method")


def apply_adapter(module: nn.Module, spec: AdapterSpec, default_targets: list[str]) -> PeftConfig | None:
    """Make ``module`` (one tower, already frozen) trainable as ``spec`` says; returns the peft config used.

    Nothing is marked on the module: which towers are fully trained is read from the specs
    (``VisionLanguageModel.fully_trained_modules``).
    """
    if spec.method == "frozen":
        return None
    _check_fits_quantized_base(module, spec)
    if spec.method == "full":
        remember_base_weights(module)
        module.requires_grad_(True)
        return None
    config = peft_config(spec, resolve_targets(module, spec, default_targets))
    inject_adapter_in_model(config, module)
    # adapters of a bf16/fp16 tower train in fp32 (as peft's get_peft_model does): optimiser updates of a few
    # 1e-5 would vanish in bf16 weights
    cast_adapter_dtype(module, "default", autocast_adapter_dtype=True)
    if not _adapter_layers(module):
        raise RuntimeError(f"peft injected no {spec.method} layer into {type(module).__name__}")
    return config


# Seen failing on the CPU (peft 0.21.2, bitsandbytes 0.50.2): peft's LyCORIS layers build their delta from the
# base weight's shape, which 4-bit packing changes; DoRA's weight norm leaves LLM.int8()'s layer state unusable.
_UNSUPPORTED_ON = {"nf4": ("loha", "lokr"), "int8": ("dora",)}


def _check_fits_quantized_base(module: nn.Module, spec: AdapterSpec) -> None:
    """Refuse what cannot train on a quantised base (``mmpeft.towers.quantize``), naming the option to change."""
    scheme = quantization_scheme(module)
    if scheme is None:
        return
    if spec.method == "full":
        raise ValueError(f"method 'full' trains the base weights, but {type(module).__name__}'s base is frozen in "
                         f"{scheme} (the tower's quantize option): use an adapter method, or unset quantize")
    if spec.method in _UNSUPPORTED_ON.get(scheme, ()):
        from peft import __version__ as peft_version

        raise ValueError(f"peft's {spec.method} layers cannot train on {scheme} base weights (seen with peft "
                         f"{peft_version}): use lora or ia3 on this tower, or another quantize")


def _adapter_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer | SoftPrompt)]


def adapter_parameter_names(module: nn.Module) -> list[str]:
    """Names in ``module`` of its adapter weights: every parameter of a peft layer except those of the base layer it
    wraps, and soft prompts. These are what trains in an adapted tower; everything else there is its base."""
    adapter = set()
    for layer in _adapter_layers(module):
        base = {id(p) for p in layer.get_base_layer().parameters()} if isinstance(layer, BaseTunerLayer) else set()
        adapter |= {id(p) for p in layer.parameters() if id(p) not in base}
    return [name for name, p in module.named_parameters() if id(p) in adapter]


def trained_bases(model: nn.Module) -> list[str]:
    """Names of the modules in ``model`` whose base weights train, so that no adapter switch gives their base back.

    A model that records this (``VisionLanguageModel.fully_trained_modules``, from its adapter specs) is asked; any
    other module (a single tower) is judged by its parameters: one outside the adapter weights that trains.
    """
    if hasattr(model, "fully_trained_modules"):
        return list(model.fully_trained_modules())
    adapter = set(adapter_parameter_names(model))
    trained = any(p.requires_grad and name not in adapter for name, p in model.named_parameters())
    return [type(model).__name__] if trained else []


# fully trained module -> its base weights (CPU copies by parameter name), taken when ``apply_adapter`` made it
# trainable: before any training, and, for a loaded checkpoint, before its trained weights were loaded into it.
# A registry, not an attribute: nothing is marked on the module (its state_dict and checkpoints stay as they were).
_BASE_WEIGHTS: weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def remember_base_weights(module: nn.Module) -> None:
    """Keep a CPU copy of ``module``'s weights as its base, so ``disabled_adapters`` can run it as the base after
    full tuning. Costs host memory of one copy of the module (a 7B LLM in bf16: 14 GB)."""
    _BASE_WEIGHTS[module] = {name: p.detach().to("cpu", copy=True) for name, p in module.named_parameters()}


def _fully_trained(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` whose base weights must be swapped in: the VLM's record, else (a single tower) its
    submodules with a kept base, else the module itself when its base weights train (which then cannot be run as
    its base)."""
    if hasattr(model, "fully_trained_modules"):
        return dict(model.fully_trained_modules())
    if not trained_bases(model):
        return {}
    kept = {name: m for name, m in model.named_modules() if m in _BASE_WEIGHTS}
    return kept or {type(model).__name__: model}


@contextmanager
def _base_weights_swapped_in(modules: dict[str, nn.Module]) -> Iterator[None]:
    """Point each fully trained module's parameters at its remembered base weights (copied to the parameters'
    devices and dtypes), and back to the trained tensors after."""
    swapped: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    for name, module in modules.items():
        base = _BASE_WEIGHTS.get(module)
        params = dict(module.named_parameters())
        if base is None or set(base) != set(params):
            raise ValueError(
                f"disabled_adapters cannot restore the base of fully fine-tuned module {name!r}: no copy of its base "
                "weights was kept for these parameters (it was made trainable outside apply_adapter, or wrapped "
                "since, e.g. by FSDP). Use an adapter method for it, or compare against a separately loaded base.")
        swapped += [(p, base[n]) for n, p in params.items()]
    trained = []
    try:
        with torch.no_grad():
            for p, base_weight in swapped:
                trained.append(p.data)
                p.data = base_weight.to(device=p.device, dtype=p.dtype)
        yield
    finally:
        for (p, _), weight in zip(swapped, trained, strict=False):
            p.data = weight


@contextmanager
def disabled_adapters(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its exact frozen base: every adapter (peft layers, soft prompts) is bypassed, and the
    weights of fully tuned towers (method ``full``) are swapped for the base weights kept when they were made
    trainable (``remember_base_weights``; the trained tensors stay allocated, so the pass briefly holds both).

    peft's switch also flips ``requires_grad`` on adapter weights; the flags are restored as they were found,
    so keep the scope to a reference forward (under ``torch.no_grad()``).

    Raises:
        ValueError: a fully tuned module whose base weights were not kept (see ``_base_weights_swapped_in``).
    """
    layers = _adapter_layers(model)
    flags = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    with _base_weights_swapped_in(_fully_trained(model)):
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for p, flag in flags.items():
                p.requires_grad_(flag)


def adapter_state_dict(module: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The peft adapter weights of ``module`` keyed as peft saves them for that module (adapter name removed).

    Args:
        state: take the tensors from this state dict of ``module`` (names as in ``module.state_dict()``) instead of
            from the module itself, e.g. the state a Lightning checkpoint holds.
    """
    return get_peft_model_state_dict(module, state_dict=state, save_embedding_layers=False)


def load_adapter_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``adapter_state_dict`` output back into an adapted module (callers check that the keys fit)."""
    result = set_peft_model_state_dict(module, state)
    if result.unexpected_keys:
        raise ValueError(f"peft did not place {result.unexpected_keys[:5]}")


@torch.no_grad()
def merged_base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of ``module`` with its adapters merged into the base weights, in the un-adapted key layout.

    Non-destructive: adapters are merged, read out (cloned) and unmerged again. A quantised base
    (``mmpeft.towers.quantize``) is dequantised first: the adapters merge into exactly the base they trained on,
    and the result is a plain full-precision state dict.
    """
    with dequantized_linears(module):
        return _merged_state(module)


def _merged_state(module: nn.Module) -> dict[str, torch.Tensor]:
    layers = {n: m for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)}
    for layer in layers.values():
        layer.merge(safe_merge=True)
    try:
        state = {}
        for key, value in module.state_dict().items():
            owner = next((n for n in layers if key.startswith(n + ".")), None)
            if owner is None:
                state[key] = value.detach().clone()
            elif key.startswith(owner + ".base_layer."):
                state[owner + "." + key[len(owner) + len(".base_layer.") :]] = value.detach().clone()
            # else: an adapter weight; merged, so dropped
    finally:
        for layer in layers.values():
            layer.unmerge()
    return state
