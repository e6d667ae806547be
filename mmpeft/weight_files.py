"""Reading the safetensors files of model directories and tower arguments: a damaged file is a clear error.

A checkpoint copied to another machine, or a write that was interrupted, can leave a truncated or empty
``trainable.safetensors``, ``adapter_model.safetensors`` or ``vision_tower.safetensors``. safetensors then raises
its own ``SafetensorError`` (``MetadataIncompleteBuffer``, ``HeaderTooSmall``, ...); ``load_weights`` turns that
into a ``ValueError`` naming the file, what it is and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def load_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path`` (on CPU).

    Args:
        what: what the file is, for the message (``"the checkpoint's trainable state"``, ``"vision weights_file"``).

    Raises:
        FileNotFoundError when it does not exist; ValueError naming the file when it is not a complete safetensors
        file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} ({what}) not found")
    try:
        return load_file(path)
    except SafetensorError as e:
        size = Path(path).stat().st_size
        raise ValueError(
            f"{path} ({what}) is damaged: not a complete safetensors file ({e}; {size} bytes). It was probably cut "
            "short by an interrupted copy or write: copy the model directory again from where it was written."
        ) from None
