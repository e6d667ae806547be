"""Checkpoints without pickle: each Lightning checkpoint is a directory written atomically.

Layout of ``step=000100.ckpt/``::

    lightning.json            the checkpoint dict's structure and every non-tensor value (loops, schedulers, ...)
    lightning.safetensors     its tensors (trainable weights, optimizer moments, RNG state), keyed by their path
    mmpeft_config.json, trainable.safetensors, llm_adapter/, vision_adapter/
                              the model files of ``mmpeft.checkpoint`` (so ``load_pretrained`` / ``mmpeft export``
                              read any training checkpoint directly, and peft reads ``llm_adapter/``)

The model files come with the checkpoint dict, as data under ``mmpeft.checkpoint.MODEL_FILES_KEY`` (put there by
``VLMModule.on_save_checkpoint``, from the trainable state that dict holds); this plugin knows no model. A dict
without that entry gives the two Lightning files only.

A process killed while saving leaves the previous checkpoint (or nothing) in place, as ``load_checkpoint`` reads it:
see ``mmpeft.atomic_directory`` for the exact guarantee. Loading reads JSON and safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors.torch import load_file, save_file

from mmpeft.atomic_directory import atomic_directory, recover_directory
from mmpeft.checkpoint import MODEL_FILES_KEY, write_model_files

STATE_JSON = "lightning.json"
STATE_TENSORS = "lightning.safetensors"


def flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor], storages: set[int] | None = None) -> Any:
    """Replace tensors by references and tuples by tagged lists, so the rest is plain JSON."""
    storages = set() if storages is None else storages
    if torch.is_tensor(obj):
        tensor = obj.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        # safetensors refuses tensors sharing storage (tied weights, views): copy any repeat
        tensors[path] = tensor.clone() if ptr in storages else tensor.contiguous()
        storages.add(ptr)
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if not all(isinstance(k, str | int) for k in obj):
            raise TypeError(f"checkpoint key types at {path!r} must be str or int")
        return {"__dict__": [[k, flatten(v, f"{path}/{k}", tensors, storages)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, f"{path}/{i}", tensors, storages) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{path}/{i}", tensors, storages) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"checkpoint value at {path!r} has type {type(obj).__name__}, which is not saved without pickle; "
                    "store plain values or tensors there")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
    return obj


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO`` writing the directory layout above."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        model_files = checkpoint.get(MODEL_FILES_KEY)
        tensors: dict[str, torch.Tensor] = {}
        structure = flatten({k: v for k, v in checkpoint.items() if k != MODEL_FILES_KEY}, "", tensors)
        with atomic_directory(path) as tmp:  # every file below is written inside it: the set is atomic
            (tmp / STATE_JSON).write_text(json.dumps(structure))
            save_file(tensors, tmp / STATE_TENSORS)
            if model_files is not None:
                write_model_files(tmp, model_files)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        path = recover_directory(path)  # a save killed between its two renames: the previous checkpoint
        if not (path / STATE_JSON).is_file():
            raise FileNotFoundError(f"{path} is not an mmpeft training checkpoint (no {STATE_JSON} inside)")
        tensors = load_file(path / STATE_TENSORS)
        if map_location is not None and not callable(map_location):
            tensors = {k: v.to(map_location) for k, v in tensors.items()}
        return unflatten(json.loads((path / STATE_JSON).read_text()), tensors)

    def remove_checkpoint(self, path: str | Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
