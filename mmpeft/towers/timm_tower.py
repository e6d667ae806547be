"""TimmVisionTower: any timm image model as a frozen ``[B, 3, H, W] -> [B, N, D]`` token encoder.

ViT-family models give patch tokens (plus CLS / register tokens when kept); CNNs give a feature map flattened to
``H' * W'`` row-major tokens. The shared contract (``VisionTower``) and the open_clip tower live in
``mmpeft.towers.vision``. Saved configs written before this class had its own file name it
``mmpeft.towers.vision.TimmVisionTower``; ``mmpeft.allowed_classes`` still accepts that path.
"""

from __future__ import annotations

import difflib
import pickle
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from mmpeft.init_args import records_init_args
from mmpeft.towers.dtypes import resolve_dtype
from mmpeft.towers.paths import absolute_if_local
from mmpeft.towers.quantize import check_scheme
from mmpeft.towers.vision import VisionTower, absolute_index, conv_layer_names, linear_layer_names


class TimmVisionTower(VisionTower):
    """Any timm image model: ViT-family patch tokens, or a CNN feature map flattened to ``H' * W'`` tokens.

    Args:
        name: a timm model name (``vit_large_patch14_clip_336``, ``vit_base_patch16_siglip_224``,
            ``tf_efficientnet_lite0``, ``resnet50``, ...).
        pretrained: download timm's pretrained weights (needs the hub; ``False`` for offline use).
        checkpoint_path: a local weights file (``.safetensors``, or a torch file read with ``weights_only=True``),
            or an embedded default (``zoo:efficientnet-lite0``, see ``mmpeft.zoo``).
        feature_layer: index into the model's ``forward_intermediates`` (blocks for ViTs, stages for CNNs; ``-2``
            as in LLaVA); ``None``: the output of ``forward_features`` (after the final norm / head conv). A list
            concatenates several layers' features per token (CNN maps pooled to the coarsest grid), e.g.
            ``[-1, null]`` for EfficientNet's last stage (320 ch) + head conv (1280 ch).
        keep_prefix_tokens: keep CLS / register tokens in front of the patch tokens (ViTs).
        image_size: input size; passed to timm as ``img_size`` for ViTs (position embeddings are resampled) and
            used for the transform of CNNs. Default: the model's pretrained config.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. a tiny ``depth`` / ``embed_dim`` for tests).
            Architecture only when read from a model directory: weight and config sources in it (timm's
            ``checkpoint_path``, ``pretrained_cfg_overlay``, ``cache_dir``, ...) are refused there
            (``mmpeft.weight_sources``); give weights through ``checkpoint_path`` / ``weights_file`` above.
        dtype: parameter dtype.
        weights_file: safetensors state dict loaded over the pruned encoder (what ``export`` writes).
        cache_prefix_blocks: cache the activations after the first N entries of ``model.blocks`` per distinct
            image (see ``mmpeft.towers.prefix_cache``): for runs that adapt only the blocks after them.
        quantize: precision of the frozen linear weights (``fp8``, ``nf4``, ``int8``; ``mmpeft.towers.quantize``).
            CNNs have no linear layers after pruning: refused for them.

    Local paths (``checkpoint_path``, ``weights_file``) are kept absolute in ``init_args``.
    """

    # local paths become absolute: saved configs must not depend on the current directory
    @records_init_args(checkpoint_path=absolute_if_local, weights_file=absolute_if_local)
    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        feature_layer: int | None | list[int | None] = -1,
        keep_prefix_tokens: bool = False,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        dtype: str = "float32",
        weights_file: str | None = None,
        cache_prefix_blocks: int = 0,
        quantize: str | None = None,
    ):
        super().__init__()
        import timm
        from timm.data import create_transform, resolve_data_config

        quantize = check_scheme(quantize, f"TimmVisionTower({name!r})")
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
            raise ValueError(f"Unknown timm model {name!r}. Close matches: {close}. All names: timm.list_models().")
        kwargs = dict(model_kwargs or {})
        is_vit = "vit" in name or "deit" in name or "eva" in name
        if image_size is not None and is_vit:
            kwargs.setdefault("img_size", image_size)
        model = timm.create_model(name, pretrained=pretrained and weights_file is None, num_classes=0, **kwargs)
        if checkpoint_path is not None and weights_file is None:
            _load_backbone_checkpoint(model, checkpoint_path)
        self.feature_layer = feature_layer
        self.keep_prefix_tokens = keep_prefix_tokens
        model.eval()
        layers = list(feature_layer) if isinstance(feature_layer, list | tuple) else [feature_layer]
        if not layers:
            raise ValueError("feature_layer list is empty")
        # each requested layer: "final" (forward_features) or its absolute index (stays valid after pruning)
        self._order: list[Any] = ["final" if i is None else absolute_index(model, i, name) for i in layers]
        self._take = sorted({i for i in self._order if i != "final"})
        if "final" not in self._order:
            model.prune_intermediate_layers(indices=self._take, prune_norm=True, prune_head=True)
        self.model = model.to(resolve_dtype(dtype))
        self.num_prefix_tokens = getattr(model, "num_prefix_tokens", 0)
        data_cfg = resolve_data_config({}, model=model)
        if image_size is not None:
            data_cfg["input_size"] = (data_cfg["input_size"][0], image_size, image_size)
            data_cfg["crop_pct"] = 1.0
        self.in_chans = data_cfg["input_size"][0]
        self.image_size = tuple(data_cfg["input_size"][1:])
        self._transform = create_transform(**data_cfg, is_training=False)
        self.prefix_cache = None
        if cache_prefix_blocks:
            from mmpeft.towers.prefix_cache import PrefixCache

            self.prefix_cache = PrefixCache(self.model, cache_prefix_blocks)
        self._probe_token_shape()
        self._load_weights_file(weights_file)
        self._freeze()
        self._quantize(quantize)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features: dict[Any, torch.Tensor] = {}
        with_prefix = self.keep_prefix_tokens and self.num_prefix_tokens > 0
        if self.prefix_cache is not None:
            self._check_prefix_frozen()
            h, inside = self.prefix_cache.prefix(self.model, pixel_values, self._take)
            final, intermediates = self.prefix_cache.suffix(
                self.model, h, self._take, "final" in self._order, "NLC" if self._is_token_model else "NCHW",
                inside)
            for index, feat in zip(self._take, intermediates):
                features[index] = (torch.cat([feat[1], feat[0]], dim=1) if with_prefix else feat[0]) \
                    if isinstance(feat, tuple) else feat
            if final is not None:
                features["final"] = final
        elif self._take:
            kwargs = {"return_prefix_tokens": True} if with_prefix else {}
            out = self.model.forward_intermediates(
                pixel_values, indices=self._take, stop_early="final" not in self._order,
                intermediates_only="final" not in self._order,
                output_fmt="NLC" if self._is_token_model else "NCHW", **kwargs,
            )
            final, intermediates = out if "final" in self._order else (None, out)
            for index, feat in zip(self._take, intermediates):
                features[index] = torch.cat([feat[1], feat[0]], dim=1) if with_prefix else feat
            if final is not None:
                features["final"] = final
        else:
            features["final"] = self.model.forward_features(pixel_values)
        if "final" in features and features["final"].dim() == 3 and not self.keep_prefix_tokens:
            features["final"] = features["final"][:, self.num_prefix_tokens :]
        parts = [features[key] for key in self._order]
        if parts[0].dim() == 4:  # CNN maps [B, C, H', W']: pool to the coarsest grid, then row-major tokens
            grid = min(p.shape[-2] for p in parts), min(p.shape[-1] for p in parts)
            parts = [p if p.shape[-2:] == grid else F.adaptive_avg_pool2d(p, grid) for p in parts]
            parts = [p.flatten(2).transpose(1, 2) for p in parts]
        return torch.cat(parts, dim=-1)  # [B, N, sum of channels]

    def _check_prefix_frozen(self) -> None:
        if not torch.is_grad_enabled():
            return
        trainable = [n for m in self.prefix_cache.prefix_modules(self.model) for n, p in m.named_parameters()
                     if p.requires_grad]
        if trainable:
            raise ValueError(f"cache_prefix_blocks={self.prefix_cache.blocks} caches blocks that have trainable "
                             f"parameters ({trainable[:3]}); adapt only later blocks or lower cache_prefix_blocks")

    @property
    def _is_token_model(self) -> bool:
        return hasattr(self.model, "blocks") and hasattr(self.model, "patch_embed")

    def default_adapter_targets(self) -> list[str]:
        if self._is_token_model:
            names = linear_layer_names(
                self.model, lambda n: n.endswith(("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
            )
            if names:
                return names
        return conv_layer_names(self.model) or linear_layer_names(self.model, lambda n: True)


def _load_backbone_checkpoint(model: nn.Module, checkpoint_path: str) -> None:
    """Load a full checkpoint into a headless model: classifier keys are dropped, anything else must match."""
    from timm.models import load_state_dict

    from mmpeft.zoo import resolve

    path = resolve(checkpoint_path)
    try:
        state = load_state_dict(path, weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as e:  # truncated, or not tensors only
        raise ValueError(
            f"checkpoint_path {path} cannot be read as weights ({type(e).__name__}: {e}). Give a .safetensors file or "
            "a torch file of tensors only (read with weights_only=True); a file cut short by an interrupted copy must "
            "be copied again."
        ) from e
    own = model.state_dict()
    head = {k for k in state if k not in own and k.split(".")[0] in ("classifier", "head", "fc")}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")

