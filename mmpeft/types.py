"""Shared contracts between the data pipeline and the model.

A batch is a plain dict (so DataLoader collation and Lightning's device transfer need no custom code):

- ``input_ids``      ``[B, T]`` long. Every image occupies ``num_image_tokens`` consecutive positions holding the
                     LLM's image placeholder id; text-only rows simply contain none.
- ``attention_mask`` ``[B, T]`` long/bool, 1 on real tokens, 0 on padding.
- ``labels``         ``[B, T]`` long, the target token at each position or ``IGNORE_INDEX`` (image placeholders,
                     prompts, padding). Labels are *unshifted* (HF convention): position t is predicted from < t.
- ``pixel_values``   ``[N_img, C, H, W]`` float, the images of the whole batch in reading order (row by row, left to
                     right within a row), or absent / ``None`` when no row has an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch

IGNORE_INDEX = -100
"""Label value that contributes no loss (the value torch's cross_entropy and HF models ignore)."""


class Batch(TypedDict, total=False):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None


@dataclass
class VLMOutput:
    """What ``VisionLanguageModel.forward`` returns.

    Attributes:
        loss: mean next-token cross-entropy over supervised positions (``None`` without labels; ``0.`` with a
            gradient path when a batch has no supervised token).
        num_supervised: number of positions that contributed to ``loss``.
        logits: ``[B, T, V]``, only when the forward was asked for them (``return_logits=True``); never computed
            implicitly in training.
        hidden_states: ``[B, P+T, D]`` final hidden states of the LLM (after its final norm); P soft prompt
            positions come first (P = 0 without a soft prompt).
        attention_mask: ``[B, P+T]`` the mask the LLM saw.
        labels: ``[B, P+T]`` the labels aligned with ``hidden_states`` (None without labels).
        prefix_length: P.
    """

    loss: torch.Tensor | None
    num_supervised: int
    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None
    prefix_length: int = 0
    logits: torch.Tensor | None = None
