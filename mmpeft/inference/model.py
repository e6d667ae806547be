"""A model directory ready for inference: the weights, the renderer of its saved input format, adapters on or off.

``--base`` (``base=True``) runs the same loaded weights with every adapter off (``disabled_adapters``: peft layers
and soft prompts bypassed), the model the guards and probes call the base. The projector stays: without it images
mean nothing to the LLM. An export has its adapters merged into the towers, so its base cannot be recovered; a
tower trained in full (method ``full``) has no base left either. Both are refused with the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmpeft.adapters.inject import disabled_adapters, trained_bases
from mmpeft.checkpoint import load_pretrained
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import renderer_for
from mmpeft.model_config import read_model_config
from mmpeft.vlm import VisionLanguageModel


@dataclass
class InferenceModel:
    """A loaded model, how it renders prompts, and whether its adapters run.

    Attributes:
        vlm: the model (in eval mode, on its device).
        renderer: ``renderer_for(vlm)`` with any explicit overrides (system prompt, max_length).
        directory: the checkpoint or export directory it came from ("" when built in Python).
        kind: ``"checkpoint"`` or ``"export"`` (``mmpeft_config.json`` key ``format``).
        base: True runs every adapter off (module docstring).
    """

    vlm: VisionLanguageModel
    renderer: ChatRenderer
    directory: str = ""
    kind: str = "checkpoint"
    base: bool = False

    def __post_init__(self) -> None:
        if self.base:
            check_base_available(self.vlm, self.kind, self.directory)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The scope of one generation call: adapters off for the base model, no autograd either way."""
        with torch.no_grad(), (disabled_adapters(self.vlm) if self.base else contextlib.nullcontext()):
            yield

    def describe(self) -> dict[str, Any]:
        """What produced an output (written beside every generated row)."""
        return {"model": self.directory, "format": self.kind, "adapters": "off" if self.base else "on"}


def check_base_available(vlm: VisionLanguageModel | None, kind: str, directory: str = "") -> None:
    """Raise ValueError unless turning the adapters off gives the model's frozen base (module docstring); with
    ``vlm`` None (not loaded yet) only the directory's kind is checked."""
    if kind == "export":
        raise ValueError(f"--base: {directory or 'this model'} is an export, its adapters merged into the tower "
                         "weights, so the base cannot be recovered from it; run --base on the training checkpoint "
                         "it was exported from")
    full = trained_bases(vlm) if vlm is not None else []
    if full:
        raise ValueError(f"--base: {full} were fully fine-tuned (method 'full'), their base weights trained in "
                         "place; there is no adapters-off model to run")


def load_inference_model(directory: str | Path, *, base: bool = False, device: str | torch.device = "cpu",
                         system_prompt: str | None = None, max_length: int | None = None,
                         **loading: Any) -> InferenceModel:
    """Load a checkpoint or export directory for inference.

    Args:
        base: run with every adapter off (refused for exports and fully fine-tuned towers).
        system_prompt / max_length: override the saved input format's (None: as trained).
        loading: ``load_pretrained`` options (``mmpeft.checkpoint.loading_options`` of the CLI's loading flags).
    """
    kind = read_model_config(directory)["format"]  # checked first: a clear error before anything loads
    if base:
        check_base_available(None, kind, str(directory))  # an export is refused before it loads
    vlm = load_pretrained(directory, **loading).to(device).eval()
    overrides = {k: v for k, v in (("system_prompt", system_prompt), ("max_length", max_length)) if v is not None}
    return InferenceModel(vlm, renderer_for(vlm, **overrides), str(directory), kind, base)
