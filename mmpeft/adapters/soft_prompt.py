"""Soft prompt: learned embeddings prepended to every LLM input (prompt tuning done by the VLM itself).

peft's prompt tuning cannot ``generate`` from ``inputs_embeds``, which a VLM always uses, so the prompt is
prepended here. It honours the adapter contract: base behaviour plus a delta (extra prefix positions), a disable
switch (``enable_adapters``), and its parameter is the adapter. The prefix stays inside the model: callers see
outputs aligned with their input (``VisionLanguageModel.forward``).
"""

from __future__ import annotations

import torch
from torch import nn


class SoftPrompt(nn.Module):
    """``num_tokens`` learned vectors of the LLM's width, initialised from existing token embeddings.

    Args:
        num_tokens: prompt length P.
        init_embeddings: ``[P, D]`` starting values (e.g. the embeddings of a text prompt or of random vocab
            rows, as in Lester et al. 2021).
    """

    def __init__(self, init_embeddings: torch.Tensor):
        super().__init__()
        self.embeddings = nn.Parameter(init_embeddings.detach().clone())
        self.enabled = True

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[0] if self.enabled else 0

    def enable_adapters(self, enabled: bool) -> None:
        self.enabled = enabled

    def prepend(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, D]``, ``[B, T]`` -> ``[B, P+T, D]``, ``[B, P+T]``: the P prompt positions in front, all attended.

        The model calls this just before its LLM and drops the P positions from what it returns. With left padding
        the prompt sits before the pads; position ids derived from the attention mask then continue across the
        gap, so batched and unbatched generation agree.
        """
        if not self.enabled:
            return embeds, attention_mask
        b = embeds.shape[0]
        prompt = self.embeddings.to(embeds.dtype).unsqueeze(0).expand(b, -1, -1)
        embeds = torch.cat([prompt, embeds], dim=1)
        attention_mask = torch.cat([attention_mask.new_ones(b, prompt.shape[1]), attention_mask], dim=1)
        return embeds, attention_mask
