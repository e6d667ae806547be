"""How to decode: greedy (temperature 0, the default) or sampled, and how many tokens at most."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding options shared by ``mmpeft chat`` and ``mmpeft generate``.

    Attributes:
        max_new_tokens: the reply budget (the prompt's own bound is the input format's ``max_length``).
        temperature: 0 decodes greedily; > 0 samples at this temperature.
        top_p: nucleus sampling mass (1: off); only when sampling.
        top_k: sample among the k most likely tokens (0: off); only when sampling.
        seed: seeds torch's generators before generating (sampled output is then reproducible for the same
            inputs, batch size and device); None leaves them as they are.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens = {self.max_new_tokens}: give at least 1 (--max-new-tokens)")
        if self.temperature < 0:
            raise ValueError(f"temperature = {self.temperature}: 0 decodes greedily, > 0 samples (--temperature)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p = {self.top_p}: must be in (0, 1] (--top-p)")
        if self.top_k < 0:
            raise ValueError(f"top_k = {self.top_k}: 0 turns it off, else a positive count (--top-k)")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``VisionLanguageModel.generate_ids``. Every sampling option is passed explicitly,
        so a generation_config.json shipped with the LLM (e.g. its own temperature or top_k=50) never leaks in."""
        if not self.sampling:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k}

    def seed_generators(self) -> None:
        if self.seed is not None:
            torch.manual_seed(self.seed)  # seeds CUDA's generators too

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
