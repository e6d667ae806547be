"""Vision-side probe for runs that adapt the vision tower: how far its features moved from the base tower.

On a held-out image set, the adapted tower and the base tower (adapters off, same weights in memory) encode the
same images. Reported: linear CKA (Kornia et al. 2019) between their mean-pooled features (1 = same geometry),
mean cosine similarity of pooled features and of individual tokens, and, where images carry labels, the accuracy of
a linear probe (multinomial logistic regression on standardised pooled features, fixed split and seed) trained on
each tower's features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mmpeft.adapters.inject import disabled_adapters
from mmpeft.vlm import VisionLanguageModel


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between feature matrices ``[N, D1]`` and ``[N, D2]`` (rows are the same inputs)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (x.T @ y).pow(2).sum()
    return float(cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()))


def linear_probe_accuracy(features: torch.Tensor, labels: Sequence[Any], train_fraction: float = 0.5,
                          seed: int = 0, steps: int = 200, weight_decay: float = 1e-3) -> float:
    """Test accuracy of a logistic-regression probe (L-BFGS) on a seeded train/test split."""
    classes = sorted(set(labels), key=str)
    if len(classes) < 2:
        raise ValueError("a linear probe needs at least two label values")
    y = torch.tensor([classes.index(lab) for lab in labels])
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(y) * train_fraction))
    train, test = perm[:cut], perm[cut:]
    if len(test) == 0:
        raise ValueError("too few images for a train/test split")
    x = features.double()
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.double, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.double, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x[train] @ weight + bias, y[train]) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x[test] @ weight + bias).argmax(1) == y[test]).double().mean())


@torch.no_grad()
def vision_drift(vlm: VisionLanguageModel, pixel_batches: Iterable[torch.Tensor],
                 labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Compare adapted and base vision features on ``pixel_batches`` (``[n, 3, H, W]`` each)."""
    pooled_a, pooled_b, token_cos = [], [], []
    device = next(vlm.vision.parameters()).device
    was_training = vlm.training
    vlm.eval()
    try:
        for pixels in pixel_batches:
            pixels = pixels.to(device)
            adapted = vlm.vision(pixels).float()  # [n, N, D]
            with disabled_adapters(vlm.vision):
                base = vlm.vision(pixels).float()
            pooled_a.append(adapted.mean(1).cpu())
            pooled_b.append(base.mean(1).cpu())
            token_cos.append(F.cosine_similarity(adapted, base, dim=-1).mean(1).cpu())
    finally:
        vlm.train(was_training)
    a, b = torch.cat(pooled_a), torch.cat(pooled_b)
    result: dict[str, Any] = {
        "images": len(a),
        "cka": linear_cka(a, b),
        "cosine_pooled": float(F.cosine_similarity(a, b, dim=-1).mean()),
        "cosine_tokens": float(torch.cat(token_cos).mean()),
    }
    if labels is not None:
        if len(labels) != len(a):
            raise ValueError(f"{len(labels)} labels for {len(a)} images")
        adapted_acc, base_acc = linear_probe_accuracy(a, labels), linear_probe_accuracy(b, labels)
        result["linear_probe"] = {"adapted": adapted_acc, "base": base_acc, "delta": adapted_acc - base_acc}
    return result
