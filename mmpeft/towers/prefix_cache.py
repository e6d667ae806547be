"""Caching a frozen vision prefix: the first K blocks of a timm tower run once per distinct image.

When only a tower's last blocks are adapted (or the tower is frozen), the activations after block K never change
for a given image, so ``PrefixCache`` keeps them, keyed by a hash of the image's pixel tensor, and each forward runs
only the blocks after K. Feature layers inside the prefix (an early stage taken beside the last one) are cached
with them. Output equals the uncached forward (up to float reassociation across batch sizes).

Supported families: timm ViTs (``patch_embed``/``blocks``/``norm``) and EfficientNet/MobileNet-style CNNs
(``conv_stem``/``bn1``/``blocks``/``conv_head``/``bn2`` with ``stage_ends``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


def tower_family(model: nn.Module) -> str:
    if hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "_pos_embed"):
        return "vit"
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "stage_ends")):
        return "efficientnet"
    raise ValueError(f"prefix caching supports timm ViTs and EfficientNet-style CNNs, not {type(model).__name__}")


def block_count(model: nn.Module, intermediate: int) -> int:
    """How many entries of ``model.blocks`` run before ``forward_intermediates`` index ``intermediate``."""
    return model.stage_ends[intermediate] if tower_family(model) == "efficientnet" else intermediate + 1


class PrefixCache:
    """Cached activations after the first ``blocks`` blocks of ``model``, per image content.

    Args:
        blocks: the prefix length (entries of ``model.blocks``); its parameters must stay frozen.
        max_entries: stop adding entries beyond this many images (memory bound); misses are then recomputed.
    """

    def __init__(self, model: nn.Module, blocks: int, max_entries: int = 200_000):
        self.family = tower_family(model)
        if not 0 < blocks <= len(model.blocks):
            raise ValueError(f"cache_prefix_blocks={blocks} must be in 1..{len(model.blocks)}")
        self.blocks = blocks
        self.max_entries = max_entries
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0

    def prefix_modules(self, model: nn.Module) -> list[nn.Module]:
        stem = [model.patch_embed] if self.family == "vit" else [model.conv_stem, model.bn1]
        return stem + list(model.blocks[: self.blocks])

    @torch.no_grad()
    def _prefix(self, model: nn.Module, x: torch.Tensor, inside: dict[int, int]) -> list[torch.Tensor]:
        """``[activations after the prefix, then the block outputs at the counts in ``inside``, in its order]``."""
        if self.family == "vit":
            h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        else:
            h = model.bn1(model.conv_stem(x))
        taken: dict[int, torch.Tensor] = {}
        for count, blk in enumerate(model.blocks[: self.blocks], start=1):
            h = blk(h)
            if count in inside:
                taken[count] = h
        return [h] + [taken[count] for count in inside]

    def prefix(self, model: nn.Module, x: torch.Tensor, take: list[int] = ()) -> tuple[torch.Tensor, dict]:
        """Activations after the prefix for a batch, and the feature layers of ``take`` that lie inside it
        (``{index: [B, ...]}``), from the cache where possible."""
        inside = {block_count(model, i): i for i in take if block_count(model, i) <= self.blocks}
        keys = [hashlib.blake2b(img.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()
                for img in x]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        computed = {}
        if missing:
            outs = self._prefix(model, x[missing], inside)
            for j, i in enumerate(missing):
                computed[keys[i]] = [o[j] for o in outs]
                if len(self.store) < self.max_entries:
                    self.store[keys[i]] = [o[j].clone() for o in outs]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        rows = [computed[k] if k in computed else self.store[k] for k in keys]
        stacked = [torch.stack([r[n] for r in rows]) for n in range(1 + len(inside))]
        return stacked[0], {index: t for index, t in zip(inside.values(), stacked[1:])}

    def suffix(self, model: nn.Module, h: torch.Tensor, take: list[int], want_final: bool, output_fmt: str,
               inside: dict[int, torch.Tensor] | None = None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Run the blocks after the prefix: ``(final features or None, intermediates at ``take``)``; layers of
        ``take`` inside the prefix come from ``inside`` (what ``prefix`` returned)."""
        inside = dict(inside or {})
        wanted = {block_count(model, i): i for i in take if i not in inside}
        if any(count <= self.blocks for count in wanted):
            raise ValueError(f"feature layers {take} lie inside the cached prefix of {self.blocks} blocks; "
                             "pass the ones prefix() returned")
        out: dict[int, torch.Tensor] = dict(inside)
        last = len(model.blocks) if want_final else max(wanted, default=self.blocks)
        for count in range(self.blocks + 1, last + 1):
            h = model.blocks[count - 1](h)
            if count in wanted:
                out[wanted[count]] = h
        intermediates = [out[i] for i in take]
        if self.family == "vit" and output_fmt == "NCHW":
            raise ValueError("ViT towers emit tokens (NLC)")
        final = None
        if want_final:
            final = model.norm(h) if self.family == "vit" else model.bn2(model.conv_head(h))
        if self.family == "vit":
            n = getattr(model, "num_prefix_tokens", 0)
            intermediates = [(t[:, n:], t[:, :n]) for t in intermediates]
        return final, intermediates

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.store), "hits": self.hits, "misses": self.misses}
