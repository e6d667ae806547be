"""Projectors map vision tokens into the LLM's embedding space: ``[B, N, Dv] -> [B, M, Dl]``.

Every projector is built as ``Projector(vision_dim, llm_dim, **options)`` so configs give only the options
(``functools.partial`` in Python, a ``class_path`` + ``init_args`` in YAML) and the VLM supplies the two widths.
Each exposes ``num_output_tokens(num_input_tokens)`` so the data side knows how many placeholder tokens an image
occupies.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmpeft.init_args import records_init_args

WIDTHS = ("vision_dim", "llm_dim")  # supplied by the model, not saved in init_args


def _group_list(groups: list[int] | None) -> list[int] | None:
    """``input_groups`` as saved: a list (a tuple from Python would not round-trip through JSON), or None."""
    return list(groups) if groups else None


class Projector(nn.Module):
    """Base contract: ``forward([B, N, Dv]) -> [B, M, Dl]`` with ``M = num_output_tokens(N)``.

    Subclasses decorate their ``__init__`` with ``@records_init_args(exclude=WIDTHS)``: ``init_args`` (their
    options, without the two widths) are what a checkpoint rebuilds them from.
    """

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.vision_dim:
            raise ValueError(
                f"{type(self).__name__} expects vision tokens [B, N, {self.vision_dim}], got {tuple(x.shape)}; "
                "the projector's vision_dim must equal the vision tower's embed_dim."
            )


class LinearProjector(Projector):
    """One linear map per token (LLaVA-1.0)."""

    @records_init_args(exclude=WIDTHS)
    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__(vision_dim, llm_dim)
        self.proj = nn.Linear(vision_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.proj(x)


class MLPProjector(Projector):
    """LLaVA-1.5's ``mlp2x_gelu``: Linear -> GELU -> Linear, per token (``num_layers`` generalises the depth).

    Args:
        hidden_dim: width of the hidden layers (default: ``llm_dim``, as in LLaVA-1.5).
        num_layers: number of Linear layers (>= 1), GELU between them.
        input_norm: normalise vision features first: ``layernorm`` (per token), ``batchnorm`` (per channel,
            running statistics, no affine: a fixed standardisation once trained; for CNN maps or concatenated
            layers with very different scales), or ``none``.
        input_groups: widths of the concatenated feature groups, in order (a multi-level tower's layers, e.g.
            ``[16, 1280]`` for EfficientNet's stage 0 + head conv); they must sum to ``vision_dim``. After the input
            norm each group is scaled by ``sqrt(vision_dim / (num_groups * width))`` so every group carries the
            same share of the input's variance: otherwise a 16-channel level next to a 1280-channel one is 1% of
            the signal the first Linear sees, and its information (colour, in that example) is learned last.
    """

    @records_init_args(exclude=WIDTHS, input_groups=_group_list)
    def __init__(
        self,
        vision_dim: int,
        llm_dim: int,
        hidden_dim: int | None = None,
        num_layers: int = 2,
        input_norm: Literal["none", "layernorm", "batchnorm"] = "none",
        input_groups: list[int] | None = None,
    ):
        super().__init__(vision_dim, llm_dim)
        if num_layers < 1:
            raise ValueError(f"MLPProjector.num_layers must be >= 1, got {num_layers}")
        hidden_dim = hidden_dim or llm_dim
        dims = [vision_dim] + [hidden_dim] * (num_layers - 1) + [llm_dim]
        if input_norm not in ("none", "layernorm", "batchnorm"):
            raise ValueError(f"MLPProjector.input_norm={input_norm!r}; use 'none', 'layernorm' or 'batchnorm'")
        self.norm = {"none": nn.Identity(), "layernorm": nn.LayerNorm(vision_dim),
                     "batchnorm": nn.BatchNorm1d(vision_dim, affine=False)}[input_norm]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(d_in, d_out))
        self.mlp = nn.Sequential(*layers)
        scale = None
        if input_groups:
            if sum(input_groups) != vision_dim or min(input_groups) < 1:
                raise ValueError(f"{type(self).__name__}.input_groups={list(input_groups)} must be positive widths "
                                 f"summing to the vision tower's embed_dim {vision_dim} (one per feature_layer entry)")
            scale = torch.cat([torch.full((w,), math.sqrt(vision_dim / (len(input_groups) * w)))
                               for w in input_groups])
        self.register_buffer("group_scale", scale, persistent=False)  # a function of init_args: not saved

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, Dv]`` through the input norm (BatchNorm1d wants channels second), then the group scales."""
        x = self.norm(x.transpose(1, 2)).transpose(1, 2) if isinstance(self.norm, nn.BatchNorm1d) else self.norm(x)
        return x if self.group_scale is None else x * self.group_scale.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.mlp(self.normalize(x))


class PooledMLPProjector(MLPProjector):
    """Average-pools the square token grid to ``output_grid x output_grid`` tokens, then applies the MLP.

    For long patch sequences (576 tokens of a 336px ViT-L/14 -> 144 with ``output_grid=12``). The input must be a
    square grid in row-major order (what both vision towers emit with prefix tokens dropped).

    ``position_embedding=True`` adds a learned vector per output cell to the pooled features before the MLP
    (zero-initialised): CNN feature maps carry little absolute position, and the MLP can then bind "what" to
    "where" before the LLM sees the tokens.
    """

    @records_init_args(exclude=WIDTHS, input_groups=_group_list)
    def __init__(self, vision_dim: int, llm_dim: int, output_grid: int = 4, hidden_dim: int | None = None,
                 num_layers: int = 2, input_norm: Literal["none", "layernorm", "batchnorm"] = "none",
                 position_embedding: bool = False, input_groups: list[int] | None = None):
        super().__init__(vision_dim, llm_dim, hidden_dim=hidden_dim, num_layers=num_layers, input_norm=input_norm,
                         input_groups=input_groups)
        self.output_grid = output_grid
        self.position = nn.Parameter(torch.zeros(output_grid**2, vision_dim)) if position_embedding else None

    def num_output_tokens(self, num_input_tokens: int) -> int:
        self._grid_side(num_input_tokens)
        return self.output_grid**2

    def _grid_side(self, n: int) -> int:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"PooledMLPProjector needs a square token grid, got {n} tokens; drop the vision tower's prefix/CLS "
                "tokens (keep_prefix_tokens: false) or use PerceiverResampler."
            )
        if side < self.output_grid:
            raise ValueError(f"PooledMLPProjector.output_grid={self.output_grid} exceeds the input grid {side}x{side}")
        return side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, n, d = x.shape
        side = self._grid_side(n)
        grid = x.transpose(1, 2).reshape(b, d, side, side)  # [B, Dv, S, S]
        pooled = F.adaptive_avg_pool2d(grid, self.output_grid).flatten(2).transpose(1, 2)  # [B, G*G, Dv]
        features = self.normalize(pooled)
        if self.position is not None:
            features = features + self.position.to(features.dtype)
        return self.mlp(features)


class PerceiverResampler(Projector):
    """Flamingo-style resampler: ``num_queries`` learned latents cross-attend to the vision tokens.

    Each layer: latents <- latents + CrossAttn(LN(latents), LN([tokens; latents])); latents <- latents + FFN.
    Output ``[B, num_queries, Dl]`` regardless of N, so it handles any token count (CLS included).

    Args:
        num_queries: output tokens per image.
        depth: number of attention + FFN layers.
        width: internal width (default ``min(vision_dim, llm_dim)`` rounded to a multiple of ``num_heads``).
        num_heads: attention heads.
    """

    @records_init_args(exclude=WIDTHS)
    def __init__(self, vision_dim: int, llm_dim: int, num_queries: int = 64, depth: int = 2,
                 width: int | None = None, num_heads: int = 8):
        super().__init__(vision_dim, llm_dim)
        width = width or max(num_heads, min(vision_dim, llm_dim) // num_heads * num_heads)
        if width % num_heads:
            raise ValueError(f"PerceiverResampler.width={width} must be divisible by num_heads={num_heads}")
        self.num_queries = num_queries
        self.input_proj = nn.Linear(vision_dim, width)
        self.latents = nn.Parameter(torch.randn(num_queries, width) * width**-0.5)
        self.layers = nn.ModuleList(_ResamplerLayer(width, num_heads) for _ in range(depth))
        self.output_norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, llm_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.num_queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        tokens = self.input_proj(x)  # [B, N, W]
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)  # [B, Q, W]
        for layer in self.layers:
            latents = layer(latents, tokens)
        return self.output_proj(self.output_norm(latents))  # [B, Q, Dl]


class _ResamplerLayer(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.norm_latents = nn.LayerNorm(width)
        self.norm_tokens = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.ffn = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_tokens(tokens), q], dim=1)  # latents also attend to themselves (Flamingo)
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.ffn(latents)
