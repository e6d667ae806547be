"""Vision towers: any open_clip or timm image encoder as a frozen ``[B, 3, H, W] -> [B, N, D]`` token encoder.

Both towers share one contract (``VisionTower``): frozen on construction, ``embed_dim``, ``num_tokens`` for their
input size, an ``image_transform`` (PIL image -> ``[3, H, W]`` tensor), and a family default for adapter targets.
Tokens come from ``forward_intermediates`` at ``feature_layer`` (LLaVA uses ``-2``, the second-to-last block);
blocks after that layer, the final norm and the head are pruned away at construction, so they cost no memory or
compute and never receive adapters.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mmpeft.towers.dtypes import resolve_dtype
from mmpeft.towers.paths import absolute_if_local, absolute_open_clip_name


class VisionTower(nn.Module):
    """Shared behaviour of vision towers. Subclasses set ``self.model`` and implement ``_encode``.

    Attributes:
        model: the wrapped encoder; adapters are injected into it.
        embed_dim: channel width ``D`` of the emitted tokens.
        image_size: ``(H, W)`` the tower expects; ``image_transform`` produces it.
        init_args: constructor arguments, enough to rebuild the tower (saved with checkpoints).
    """

    model: nn.Module
    embed_dim: int
    image_size: tuple[int, int]
    in_chans: int = 3
    init_args: dict[str, Any]

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VisionTower:
        # Normalisation statistics belong to the frozen base: BatchNorm must never update running stats, whatever
        # the training mode (adapter dropout still follows `mode`).
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    @property
    def num_tokens(self) -> int:
        """Tokens per image at ``image_size``."""
        return self._num_tokens

    def _probe_token_shape(self) -> None:
        """Set ``num_tokens`` and ``embed_dim`` from one forward of a blank image (cheaper than per-family math)."""
        probe = torch.zeros(1, self.in_chans, *self.image_size, dtype=self.dtype)
        with torch.no_grad():
            tokens = self._encode(probe)
        self._num_tokens, self.embed_dim = tokens.shape[1], tokens.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_transform(self, image: Any) -> torch.Tensor:
        """PIL image -> ``[3, H, W]`` float tensor, normalised as the encoder was trained."""
        return self._transform(image)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, D]`` tokens (prefix tokens first when kept)."""
        self._check_pixels(pixel_values)
        return self._encode(pixel_values.to(self.dtype))

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def default_adapter_targets(self) -> list[str]:
        """Module names (in ``self.model``) adapted when an ``AdapterSpec`` gives no ``targets``."""
        raise NotImplementedError

    def _check_pixels(self, x: torch.Tensor) -> None:
        expected = (self.in_chans, *self.image_size)
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__}({self.init_args.get('name')}) expects pixel_values "
                f"[B, {', '.join(map(str, expected))}], got {shape}; "
                "preprocess images with the tower's image_transform."
            )
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects floating-point pixel_values, got {x.dtype}; uint8 images must go "
                "through the tower's image_transform (which scales and normalises them)."
            )

    def _load_weights_file(self, weights_file: str | None) -> None:
        """Load a safetensors state dict (e.g. from ``export``) over the built, pruned encoder; strict."""
        if weights_file is None:
            return
        state = load_file(weights_file)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"weights_file {weights_file} does not fit {self.init_args.get('name')} at feature_layer="
                f"{self.init_args.get('feature_layer')}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )


def _linear_layer_names(model: nn.Module, pattern: Callable[[str], bool]) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern(n)]


class OpenClipVisionTower(VisionTower):
    """The image encoder of any open_clip model (the text tower is dropped after loading).

    Args:
        name: an open_clip model name (``ViT-L-14-336``, ``ViT-B-16-SigLIP``, ...), ``local-dir:/path`` (a folder
            with ``open_clip_config.json`` + weights) or ``hf-hub:org/repo``.
        pretrained: a pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...) or a local checkpoint file; ``None``
            for random weights. Ignored for ``local-dir:``/``hf-hub:`` names (they carry their weights).
        feature_layer: which block's output gives the tokens (``-1`` last, ``-2`` second-to-last as in LLaVA);
            ``None``: the last block followed by the model's final norm.
        keep_prefix_tokens: keep the CLS token in front of the patch tokens.
        image_size: override the model's input size (position embeddings are resampled by open_clip).
        dtype: parameter dtype (``float32``, ``bfloat16``, ``float16``).
        weights_file: safetensors state dict loaded over the pruned encoder (what ``export`` writes).

    Local paths (``local-dir:`` names, a ``pretrained`` file, ``weights_file``) are kept absolute in ``init_args``.
    """

    def __init__(
        self,
        name: str,
        pretrained: str | None = None,
        feature_layer: int | None = -1,
        keep_prefix_tokens: bool = False,
        image_size: int | None = None,
        dtype: str = "float32",
        weights_file: str | None = None,
    ):
        super().__init__()
        import open_clip

        # local paths become absolute: saved configs must not depend on the current directory
        name, weights_file = absolute_open_clip_name(name), absolute_if_local(weights_file)
        pretrained = absolute_if_local(pretrained)
        self.init_args = dict(name=name, pretrained=pretrained, feature_layer=feature_layer,
                              keep_prefix_tokens=keep_prefix_tokens, image_size=image_size, dtype=dtype,
                              weights_file=weights_file)
        known = open_clip.list_models()
        if ":" not in name and name not in known:
            close = difflib.get_close_matches(name, known, n=8, cutoff=0.4)
            raise ValueError(
                f"Unknown open_clip model {name!r}. Close matches: {close}. All names: open_clip.list_models(); "
                "a local model is 'local-dir:/path/to/dir' (open_clip_config.json + weights)."
            )
        clip = open_clip.create_model(
            name, pretrained=pretrained, force_image_size=image_size, weights_only=True,
            load_weights=weights_file is None,
        )
        visual = clip.visual
        del clip  # the text tower is never used
        self.feature_layer = feature_layer
        self.keep_prefix_tokens = keep_prefix_tokens
        if not hasattr(visual, "forward_intermediates"):
            raise ValueError(f"open_clip model {name!r} ({type(visual).__name__}) has no forward_intermediates")
        visual.eval()
        self._take_index = _absolute_index(visual, feature_layer, name)
        if feature_layer is not None:
            visual.prune_intermediate_layers(indices=[self._take_index], prune_norm=True, prune_head=True)
        self.model = visual.to(resolve_dtype(dtype))
        pre = visual.preprocess_cfg
        size = pre["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self._transform = open_clip.image_transform(
            self.image_size, is_train=False, mean=pre["mean"], std=pre["std"],
            interpolation=pre.get("interpolation"), resize_mode=pre.get("resize_mode"),
        )
        self._probe_token_shape()
        self._load_weights_file(weights_file)
        self._freeze()

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_intermediates(
            pixel_values,
            indices=[self._take_index],
            stop_early=True,
            normalize_intermediates=self.feature_layer is None,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=self.keep_prefix_tokens,
        )
        tokens = out["image_intermediates"][0]
        if tokens.dim() == 4:  # CNN trunks (ModifiedResNet, ConvNeXt) give maps: flatten to row-major tokens
            tokens = tokens.flatten(2).transpose(1, 2)
        if self.keep_prefix_tokens and out.get("image_intermediates_prefix"):
            tokens = torch.cat([out["image_intermediates_prefix"][0], tokens], dim=1)
        return tokens

    def default_adapter_targets(self) -> list[str]:
        # The MLP linears only: LoRA on nn.MultiheadAttention merges/unmerges inside forward, which lets the
        # "frozen" in_proj weights drift by ~1e-7 per step (see ENVIRONMENT.md). Target `attn` explicitly if wanted.
        names = _linear_layer_names(self.model, lambda n: n.endswith(("mlp.c_fc", "mlp.c_proj")))
        return names or _conv_layer_names(self.model)


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
        dtype: parameter dtype.
        weights_file: safetensors state dict loaded over the pruned encoder (what ``export`` writes).
        cache_prefix_blocks: cache the activations after the first N entries of ``model.blocks`` per distinct
            image (see ``mmpeft.towers.prefix_cache``): for runs that adapt only the blocks after them.

    Local paths (``checkpoint_path``, ``weights_file``) are kept absolute in ``init_args``.
    """

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
    ):
        super().__init__()
        import timm
        from timm.data import create_transform, resolve_data_config

        # local paths become absolute: saved configs must not depend on the current directory
        checkpoint_path, weights_file = absolute_if_local(checkpoint_path), absolute_if_local(weights_file)
        self.init_args = dict(name=name, pretrained=pretrained, checkpoint_path=checkpoint_path,
                              feature_layer=feature_layer, keep_prefix_tokens=keep_prefix_tokens,
                              image_size=image_size, model_kwargs=model_kwargs, dtype=dtype, weights_file=weights_file,
                              cache_prefix_blocks=cache_prefix_blocks)
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
        self._order: list[Any] = ["final" if i is None else _absolute_index(model, i, name) for i in layers]
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
            names = _linear_layer_names(
                self.model, lambda n: n.endswith(("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
            )
            if names:
                return names
        return _conv_layer_names(self.model) or _linear_layer_names(self.model, lambda n: True)


def _load_backbone_checkpoint(model: nn.Module, checkpoint_path: str) -> None:
    """Load a full checkpoint into a headless model: classifier keys are dropped, anything else must match."""
    from timm.models import load_state_dict

    from mmpeft.zoo import resolve

    path = resolve(checkpoint_path)
    state = load_state_dict(path, weights_only=True)
    own = model.state_dict()
    head = {k for k in state if k not in own and k.split(".")[0] in ("classifier", "head", "fc")}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def _absolute_index(model: nn.Module, feature_layer: int | None, name: str) -> int:
    """``feature_layer`` as a non-negative index into ``forward_intermediates`` (stays valid after pruning)."""
    if hasattr(model, "feature_info") and isinstance(model.feature_info, list):  # timm: one entry per intermediate
        count = len(model.feature_info)
    elif hasattr(model, "transformer") and hasattr(model.transformer, "resblocks"):  # open_clip ViT
        count = len(model.transformer.resblocks)
    else:  # any other trunk: count what forward_intermediates returns for all indices
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64)
            out = model.forward_intermediates(probe, indices=None, intermediates_only=True)
        count = len(out["image_intermediates"] if isinstance(out, dict) else out)
    layer = -1 if feature_layer is None else feature_layer
    if not -count <= layer < count:
        raise ValueError(f"feature_layer={feature_layer} is out of range for {name!r}, which has {count} "
                         f"feature layers (valid: {-count}..{count - 1}, or None for the final features)")
    return layer % count


def _conv_layer_names(model: nn.Module) -> list[str]:
    """Dense (groups == 1) convolutions past the stem: pointwise and full convs. Depthwise convs are left out
    (a rank-r update of a per-channel 3x3 kernel buys almost nothing), as is the 3-channel stem."""
    return [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels > 4
    ]
