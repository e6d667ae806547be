"""Vision towers: any open_clip or timm image encoder as a frozen ``[B, 3, H, W] -> [B, N, D]`` token encoder.

This file holds the shared contract (``VisionTower``) and ``OpenClipVisionTower``; ``TimmVisionTower`` lives in
``mmpeft.towers.timm_tower`` (saved configs naming its old path still load). Every tower is
frozen on construction and has ``embed_dim``, ``num_tokens`` for its input size, an ``image_transform`` (PIL
image -> ``[3, H, W]`` tensor), and a family default for adapter targets.
Tokens come from ``forward_intermediates`` at ``feature_layer`` (LLaVA uses ``-2``, the second-to-last block);
blocks after that layer, the final norm and the head are pruned away at construction, so they cost no memory or
compute and never receive adapters.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mmpeft.init_args import records_init_args
from mmpeft.towers.dtypes import resolve_dtype
from mmpeft.towers.paths import absolute_if_local, absolute_open_clip_name
from mmpeft.towers.quantize import QuantizationReport, check_scheme, quantize_linears
from mmpeft.weight_files import load_weights


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
        # the first floating-point weight: quantised layers hold integer codes
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    def _quantize(self, scheme: str | None) -> None:
        """Put the frozen linear layers in ``scheme``'s precision (``mmpeft.towers.quantize``); after ``_freeze``."""
        self.quantization: QuantizationReport | None = None
        if scheme is not None:
            owner = f"{type(self).__name__}({self.init_args.get('name')!r})"
            self.quantization = quantize_linears(self.model, scheme, owner)
            logging.getLogger(__name__).info("%s: %s", owner, self.quantization.summary())

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
        state = load_weights(weights_file, f"weights_file of {type(self).__name__}({self.init_args.get('name')})")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"weights_file {weights_file} does not fit {self.init_args.get('name')} at feature_layer="
                f"{self.init_args.get('feature_layer')}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )


def linear_layer_names(model: nn.Module, pattern: Callable[[str], bool]) -> list[str]:
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
        quantize: precision of the frozen linear weights (``fp8``, ``nf4``, ``int8``; ``mmpeft.towers.quantize``);
            the linears inside ``nn.MultiheadAttention`` stay in ``dtype``.

    Local paths (``local-dir:`` names, a ``pretrained`` file, ``weights_file``) are kept absolute in ``init_args``.
    """

    # local paths become absolute: saved configs must not depend on the current directory
    @records_init_args(name=absolute_open_clip_name, pretrained=absolute_if_local, weights_file=absolute_if_local)
    def __init__(
        self,
        name: str,
        pretrained: str | None = None,
        feature_layer: int | None = -1,
        keep_prefix_tokens: bool = False,
        image_size: int | None = None,
        dtype: str = "float32",
        weights_file: str | None = None,
        quantize: str | None = None,
    ):
        super().__init__()
        import open_clip

        quantize = check_scheme(quantize, f"OpenClipVisionTower({name!r})")
        known = open_clip.list_models()
        if ":" not in name and name not in known:
            close = difflib.get_close_matches(name, known, n=8, cutoff=0.4)
            raise ValueError(
                f"Unknown open_clip model {name!r}. Close matches: {close}. All names: open_clip.list_models(); "
                "a local model is 'local-dir:/path/to/dir' (open_clip_config.json + weights)."
            )
        with _quiet_missing_weights(weights_file is not None):
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
        self._take_index = absolute_index(visual, feature_layer, name)
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
        self._quantize(quantize)

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
        # "frozen" in_proj weights drift by ~1e-7 per step (rounding in the merge/unmerge round trip). Target `attn`
        # explicitly if wanted.
        names = linear_layer_names(self.model, lambda n: n.endswith(("mlp.c_fc", "mlp.c_proj")))
        return names or conv_layer_names(self.model)


def absolute_index(model: nn.Module, feature_layer: int | None, name: str) -> int:
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


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dense (groups == 1) convolutions past the stem: pointwise and full convs. Depthwise convs are left out
    (a rank-r update of a per-channel 3x3 kernel buys almost nothing), as is the 3-channel stem."""
    return [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels > 4
    ]


class _MissingWeightsFilter(logging.Filter):
    """Drops open_clip's "no weights" warnings: they are wrong when ``weights_file`` supplies the weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("no CLIP weights found" in message or "Model initialized randomly" in message)


@contextlib.contextmanager
def _quiet_missing_weights(active: bool) -> Iterator[None]:
    """While ``active``, open_clip's warnings that a model has no weights are dropped (an export's tower is built
    without weights, then ``weights_file`` is loaded over it); every other message passes."""
    if not active:
        yield
        return
    root, quiet = logging.getLogger(), _MissingWeightsFilter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
