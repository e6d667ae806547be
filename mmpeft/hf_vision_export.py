"""mmpeft vision towers as transformers ``CLIPVisionModel`` / ``SiglipVisionModel`` weights, where exactly expressible.

Used by ``mmpeft.hf_llava_export``. Both HF encoders are pre-LN ViTs with the same layer layout (``layer_norm1``,
``self_attn.{q,k,v,out}_proj``, ``layer_norm2``, ``mlp.fc1`` / ``fc2``); they differ in the stem:

    CLIPVisionModel     conv (no bias) -> [CLS; patches] + position embedding (CLS included) -> pre_layrnorm
    SiglipVisionModel   conv (bias) -> patches + position embedding; no class token, no pre-norm

Which mmpeft towers map (anything else: ``vision_problems`` says why):

- open_clip ``VisionTransformer`` (``OpenClipVisionTower``) -> CLIP: ``conv1``, ``class_embedding``,
  ``positional_embedding``, ``ln_pre``, ``resblocks.i`` (``ln_1``, fused ``attn.in_proj_*`` split q/k/v,
  ``attn.out_proj``, ``ln_2``, ``mlp.c_fc`` / ``c_proj``).
- timm ``VisionTransformer`` (``TimmVisionTower``) with a class token and a ``norm_pre`` LayerNorm (timm's CLIP ViTs)
  -> CLIP, a patch-embedding bias folded into the patch positions' embeddings (conv(x) + b + pos = conv(x) +
  (pos + b)); without a class token and without pre-norm (timm's SigLIP ViTs) -> SigLIP. Fused ``qkv`` is split; a
  missing qkv bias becomes zeros. Refused: register tokens, ``no_embed_class``, dynamic image size, layer scale,
  q/k norms, scale norms, a class token without pre-norm (timm's default ViTs: neither HF stem has that shape).

Features: mmpeft prunes the blocks after its ``feature_layer``, so the HF encoder has exactly the kept blocks and
LLaVA reads ``hidden_states[i + 1]`` for block ``i`` (``hidden_states[0]`` is the stem's output): ``-1`` for one
layer, the list for timm's concatenated layers. ``feature_layer=None`` (the final norm applied to the tokens) has no
LLaVA counterpart. Prefix tokens: ``keep_prefix_tokens=False`` -> LLaVA's ``"default"`` (drops the CLS); a tower
without a CLS (SigLIP) or keeping it -> ``"full"``. The HF ``post_layernorm`` (never applied to LLaVA's features) is
written as the identity. The image processor is read off the tower's torchvision transform (``Resize`` shortest
edge or exact size, ``CenterCrop``, ``ToTensor``, ``Normalize``; any other step is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmpeft.adapters.inject import merged_base_state_dict


@dataclass
class HFVision:
    """What a LLaVA export needs of the vision tower."""

    config: dict[str, Any]  # CLIPVisionConfig / SiglipVisionConfig kwargs, with model_type
    state: dict[str, torch.Tensor]  # the HF vision model's state dict (adapters merged)
    feature_layer: int | list[int]  # LlavaConfig.vision_feature_layer
    select_strategy: str  # "default" (drop CLS) or "full"
    num_additional_image_tokens: int  # 1 with a CLS token, else 0 (LlavaProcessor's token count)
    patch_size: int


def vision_problems(vision: nn.Module) -> list[str]:
    """Why ``vision`` has no exact CLIPVisionModel / SiglipVisionModel form (empty: it has)."""
    from mmpeft.towers.timm_tower import TimmVisionTower
    from mmpeft.towers.vision import OpenClipVisionTower

    name = vision.init_args.get("name")
    if isinstance(vision, OpenClipVisionTower):
        problems = _open_clip_problems(vision.model, name)
        if vision.feature_layer is None:
            problems.append("vision feature_layer=None applies open_clip's final LayerNorm (ln_post) to the tokens; "
                            "LLaVA takes hidden states before the final norm (train with feature_layer=-1 or -2)")
    elif isinstance(vision, TimmVisionTower):
        problems = _timm_problems(vision.model, name)
        if "final" in vision._order:
            problems.append("vision feature_layer=None uses timm's forward_features (final norm applied); LLaVA "
                            "takes hidden states before the final norm (train with integer feature_layer)")
    else:
        return [f"the vision tower {type(vision).__name__}({name!r}) has no CLIPVisionModel / SiglipVisionModel form"]
    if problems:
        return problems
    if len(set(vision.image_size)) != 1:
        problems.append(f"{name!r} takes non-square input {vision.image_size}")
    try:
        _image_processor_kwargs(vision._transform)
    except ValueError as e:
        problems.append(f"{name!r}: {e}")
    return problems


def _open_clip_problems(visual: nn.Module, name: str) -> list[str]:
    if type(visual).__name__ != "VisionTransformer" or not hasattr(visual, "transformer"):
        return [f"the open_clip trunk of {name!r} is {type(visual).__name__}, not a ViT (CNN towers have no "
                "CLIPVisionModel form)"]
    problems = [] if isinstance(visual.ln_pre, nn.LayerNorm) else [f"{name!r} has no ln_pre LayerNorm"]
    if len(set(visual.patch_size)) != 1:
        problems.append(f"{name!r} has non-square patches {visual.patch_size}")
    for i, block in enumerate(visual.transformer.resblocks):
        if type(block).__name__ != "ResidualAttentionBlock" or not isinstance(block.attn, nn.MultiheadAttention):
            problems.append(f"block {i} of {name!r} is a {type(block).__name__} (custom attention), not CLIP's")
        elif not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            problems.append(f"block {i} of {name!r} has layer scale, which CLIP's encoder layer lacks")
        elif _activation(block.mlp.gelu) is None:
            problems.append(f"block {i} of {name!r} uses activation {block.mlp.gelu!r}")
    return problems + _eps_problems(visual, name)


def _timm_problems(model: nn.Module, name: str) -> list[str]:
    if type(model).__name__ != "VisionTransformer" or not hasattr(model, "blocks"):
        return [f"the timm model {name!r} ({type(model).__name__}) is not a ViT (CNN towers have no CLIP / SigLIP "
                "form)"]
    problems = []
    pre_norm = isinstance(model.norm_pre, nn.LayerNorm)
    if model.has_class_token != pre_norm or not (pre_norm or isinstance(model.norm_pre, nn.Identity)):
        problems.append(f"{name!r} has {'a' if model.has_class_token else 'no'} class token and "
                        f"{type(model.norm_pre).__name__} pre-norm: CLIPVisionModel needs both, SiglipVisionModel "
                        "neither")
    for flag, what in ((model.num_reg_tokens, "register tokens"), (model.no_embed_class, "no_embed_class"),
                       (model.dynamic_img_size, "dynamic_img_size"), (model.pos_embed is None, "no pos_embed"),
                       (not isinstance(model.patch_embed.norm, nn.Identity), "a patch-embedding norm")):
        if flag:
            problems.append(f"{name!r} uses {what}")
    for i, block in enumerate(model.blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        parts = [type(block).__name__, type(attn).__name__, type(mlp).__name__]
        if parts != ["Block", "Attention", "Mlp"]:
            problems.append(f"block {i} of {name!r} is {parts}, not timm's plain Block/Attention/Mlp")
            continue
        extras = [n for n in ("ls1", "ls2") if not isinstance(getattr(block, n), nn.Identity)]
        extras += [f"attn.{n}" for n in ("q_norm", "k_norm", "norm") if not isinstance(getattr(attn, n), nn.Identity)]
        extras += ["mlp.norm"] if not isinstance(mlp.norm, nn.Identity) else []
        if extras:
            problems.append(f"block {i} of {name!r} has {extras} (layer scale / extra norms) that HF layers lack")
        if _activation(mlp.act) is None:
            problems.append(f"block {i} of {name!r} uses activation {mlp.act!r}")
    return problems + _eps_problems(model, name)


def _eps_problems(model: nn.Module, name: str) -> list[str]:
    if len({m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}) > 1:
        return [f"{name!r} mixes LayerNorm eps values (the HF vision config has one layer_norm_eps)"]
    return []


def _activation(module: nn.Module) -> str | None:
    """The transformers ``hidden_act`` computing exactly what ``module`` computes, or None."""
    kind = type(module).__name__
    if kind == "QuickGELU":
        return "quick_gelu"
    if kind == "GELUTanh":
        return "gelu_pytorch_tanh"
    if kind == "GELU":  # torch's and timm's (same F.gelu)
        return {"none": "gelu", "tanh": "gelu_pytorch_tanh"}.get(getattr(module, "approximate", "none"))
    return None


def hf_vision(vision: nn.Module) -> HFVision:
    """The HF form of a tower ``vision_problems`` accepts (adapters merged; the tower is left unchanged)."""
    from mmpeft.towers.vision import OpenClipVisionTower

    if isinstance(vision, OpenClipVisionTower):
        return _from_open_clip(vision)
    return _from_timm(vision)


def _encoder_config(model_type: str, width: int, blocks: int, heads: int, mlp: int, patch: int, size: int,
                    act: str, eps: float) -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": blocks,
            "num_attention_heads": heads, "num_channels": 3, "image_size": size, "patch_size": patch,
            "hidden_act": act, "layer_norm_eps": eps}


def _layer(state: dict[str, torch.Tensor], i: int, src: dict[str, torch.Tensor], names: dict[str, str],
           qkv: str, width: int) -> None:
    """Encoder layer ``i`` from ``src`` (``names``: HF module -> source module; ``qkv``: the fused q/k/v linear)."""
    for theirs, ours in names.items():
        for kind in ("weight", "bias"):
            state[f"encoder.layers.{i}.{theirs}.{kind}"] = src[f"{ours}.{kind}"]
    bias = src.get(f"{qkv}_bias" if qkv.endswith("in_proj") else f"{qkv}.bias", torch.zeros(3 * width))
    weight = src[f"{qkv}_weight" if qkv.endswith("in_proj") else f"{qkv}.weight"]
    for proj, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3), bias.chunk(3)):  # q, k, v in order
        state[f"encoder.layers.{i}.self_attn.{proj}.weight"] = w.clone()
        state[f"encoder.layers.{i}.self_attn.{proj}.bias"] = b.clone()


def _identity_post_norm(state: dict[str, torch.Tensor], width: int, dtype: torch.dtype) -> None:
    state["post_layernorm.weight"] = torch.ones(width, dtype=dtype)
    state["post_layernorm.bias"] = torch.zeros(width, dtype=dtype)


def _from_open_clip(vision: nn.Module) -> HFVision:
    visual, src = vision.model, merged_base_state_dict(vision.model)
    blocks, width = visual.transformer.resblocks, visual.class_embedding.shape[0]
    config = _encoder_config("clip_vision_model", width, len(blocks), blocks[0].attn.num_heads,
                             blocks[0].mlp.c_fc.out_features, visual.patch_size[0], vision.image_size[0],
                             _activation(blocks[0].mlp.gelu), visual.ln_pre.eps)
    config["projection_dim"] = width
    state = {"embeddings.patch_embedding.weight": src["conv1.weight"],
             "embeddings.class_embedding": src["class_embedding"],
             "embeddings.position_embedding.weight": src["positional_embedding"],
             "pre_layrnorm.weight": src["ln_pre.weight"], "pre_layrnorm.bias": src["ln_pre.bias"]}
    for i in range(len(blocks)):
        p = f"transformer.resblocks.{i}."
        _layer(state, i, src, {"layer_norm1": p + "ln_1", "layer_norm2": p + "ln_2", "mlp.fc1": p + "mlp.c_fc",
                               "mlp.fc2": p + "mlp.c_proj", "self_attn.out_proj": p + "attn.out_proj"},
               p + "attn.in_proj", width)
    _identity_post_norm(state, width, src["ln_pre.weight"].dtype)
    return HFVision(config, _contiguous(state), -1, "full" if vision.keep_prefix_tokens else "default", 1,
                    visual.patch_size[0])


def _from_timm(vision: nn.Module) -> HFVision:
    model, src = vision.model, merged_base_state_dict(vision.model)
    clip = model.has_class_token
    width, blocks = model.embed_dim, model.blocks
    patch = model.patch_embed.patch_size[0]
    config = _encoder_config("clip_vision_model" if clip else "siglip_vision_model", width, len(blocks),
                             blocks[0].attn.num_heads, blocks[0].mlp.fc1.out_features, patch, vision.image_size[0],
                             _activation(blocks[0].mlp.act), blocks[0].norm1.eps)
    pos = src["pos_embed"][0].clone()  # [1 (CLS) + N, D] for CLIP, [N, D] for SigLIP
    state = {"embeddings.patch_embedding.weight": src["patch_embed.proj.weight"]}
    if clip:
        config["projection_dim"] = width
        if "patch_embed.proj.bias" in src:  # CLIP's conv has no bias: fold it into the patch positions
            pos[1:] += src["patch_embed.proj.bias"]
        state.update({"embeddings.class_embedding": src["cls_token"].reshape(width),
                      "pre_layrnorm.weight": src["norm_pre.weight"], "pre_layrnorm.bias": src["norm_pre.bias"]})
    else:
        config["vision_use_head"] = False
        state["embeddings.patch_embedding.bias"] = src.get("patch_embed.proj.bias", torch.zeros(width))
    state["embeddings.position_embedding.weight"] = pos
    for i in range(len(blocks)):
        p = f"blocks.{i}."
        _layer(state, i, src, {"layer_norm1": p + "norm1", "layer_norm2": p + "norm2", "mlp.fc1": p + "mlp.fc1",
                               "mlp.fc2": p + "mlp.fc2", "self_attn.out_proj": p + "attn.proj"}, p + "attn.qkv", width)
    _identity_post_norm(state, width, pos.dtype)
    layers = [i for i in vision._order]
    feature_layer = -1 if len(layers) == 1 else [i + 1 for i in layers]
    full = vision.keep_prefix_tokens or not clip
    return HFVision(config, _contiguous(state), feature_layer, "full" if full else "default", int(clip), patch)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in state.items()}


def image_processor_kwargs(vision: nn.Module) -> dict[str, Any]:
    """``CLIPImageProcessor`` arguments reproducing the tower's eval transform (``image_transform``)."""
    return _image_processor_kwargs(vision._transform)


def _image_processor_kwargs(transform: Any) -> dict[str, Any]:
    """Read a torchvision ``Compose`` of Resize / CenterCrop / RGB conversion / ToTensor / Normalize.

    Raises:
        ValueError: a step the HF image processor cannot reproduce (named).
    """
    from torchvision import transforms as T

    kwargs: dict[str, Any] = {"do_resize": False, "do_center_crop": False, "do_rescale": False,
                              "do_normalize": False, "do_convert_rgb": True}
    resample = {T.InterpolationMode.BICUBIC: 3, T.InterpolationMode.BILINEAR: 2, T.InterpolationMode.NEAREST: 0}
    for step in getattr(transform, "transforms", [transform]):
        kind = type(step).__name__
        if isinstance(step, T.Resize) and step.max_size is None and step.interpolation in resample:
            size = step.size if isinstance(step.size, int) or len(step.size) == 2 else step.size[0]
            kwargs.update(do_resize=True, resample=resample[step.interpolation],
                          size={"shortest_edge": size} if isinstance(size, int) else
                          {"height": size[0], "width": size[1]})
        elif isinstance(step, T.CenterCrop):
            kwargs.update(do_center_crop=True, crop_size={"height": step.size[0], "width": step.size[1]})
        elif kind in ("ToTensor", "MaybeToTensor"):
            kwargs.update(do_rescale=True, rescale_factor=1 / 255)
        elif isinstance(step, T.Normalize):
            kwargs.update(do_normalize=True, image_mean=[float(x) for x in torch.as_tensor(step.mean)],
                          image_std=[float(x) for x in torch.as_tensor(step.std)])
        elif kind == "MaybeConvertMode" or getattr(step, "__name__", "") == "_convert_to_rgb":
            continue  # RGB conversion: the processor's do_convert_rgb
        else:
            raise ValueError(f"its image transform step {step!r} has no CLIPImageProcessor equivalent")
    return kwargs
