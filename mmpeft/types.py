"""Shared contracts between the data pipeline and the model: the ``Batch``, ``VLMOutput`` and ``IGNORE_INDEX``.

A batch is a plain dict typed as ``Batch`` (a ``TypedDict``: DataLoader collation and Lightning's device transfer
need no custom code, and ``batch["input_ids"]`` is what every reader writes). ``Collator`` produces it, the
training loader adds the data position, ``select_rows`` cuts it, and ``VLMModule``, the guards
(``GuardContext.batch``) and the text probes consume it. ``docs/batch.md`` describes it for users.
``check_batch`` and ``check_model_inputs`` are the cheap runtime checks (shapes and dtypes only: no device sync).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import torch

IGNORE_INDEX = -100
"""Label value that contributes no loss (the value torch's cross_entropy and HF models ignore)."""


class _BatchRequired(TypedDict):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None
    has_image: torch.Tensor
    num_images: torch.Tensor


class Batch(_BatchRequired, total=False):
    """One collated batch of B rows padded to length T (``Collator``); image and text-only rows may mix.

    Always present:

    - ``input_ids``      ``[B, T]`` int64. Every image occupies ``num_image_tokens`` consecutive positions holding
                         the LLM's image placeholder id; text-only rows contain none. Padding holds the pad id.
    - ``attention_mask`` ``[B, T]`` int64 (bool accepted), 1 on real tokens, 0 on padding (the collator pads on the
                         right; the model accepts either side).
    - ``labels``         ``[B, T]`` int64, the token at each position or ``IGNORE_INDEX`` (image placeholders,
                         prompts, padding). *Unshifted* (HF convention): position t is predicted from positions < t,
                         so ``labels[:, 0]`` is never a target.
    - ``pixel_values``   ``[N_img, C, H, W]`` float, the images of the whole batch in reading order (row by row, left
                         to right within a row), N_img = ``num_images.sum()``; ``None`` when no row has an image.
    - ``has_image``      ``[B]`` bool, the row has at least one image (False: a text-only / replay row).
    - ``num_images``     ``[B]`` int64, images of each row (which ``pixel_values`` rows belong to it).

    Present in batches from the data pipeline (metadata; ``select_rows`` keeps them):

    - ``id``             ``list[str]`` of length B, each row's sample id.
    - ``source``         ``list[str]`` of length B, the dataset each row came from.
    - ``eval``           ``list[dict]`` of length B, reference fields for scoring (answers, captions, ...).

    Present in training batches (``VLLoader``; checkpoints store the position of the last trained batch):

    - ``epoch``          int, the pass this batch belongs to.
    - ``index``          int, the batch's position within that pass.
    """

    id: list[Any]
    source: list[Any]
    eval: list[dict[str, Any]]
    epoch: int
    index: int


MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values")
"""The ``Batch`` keys ``VisionLanguageModel.forward`` takes (as keyword arguments of the same names)."""


def check_model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> None:
    """Shapes and dtypes of the model's inputs (no values read, so no device sync).

    Raises:
        ValueError naming the key, its shape or dtype, and what the contract (``mmpeft.types.Batch``) asks.
    """
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or not _is_integer(input_ids):
        raise ValueError(f"batch key 'input_ids' must be a [B, T] integer tensor, got {_describe(input_ids)} "
                         "(see mmpeft.types.Batch)")
    for key, value in (("attention_mask", attention_mask), ("labels", labels)):
        if value is None:
            continue
        ok = torch.is_tensor(value) and (_is_integer(value) or (key == "attention_mask" and value.dtype == torch.bool))
        if not ok or tuple(value.shape) != tuple(input_ids.shape):
            kind = "an integer or bool" if key == "attention_mask" else "an integer"
            raise ValueError(f"batch key {key!r} must be {kind} tensor of input_ids' shape {list(input_ids.shape)}, "
                             f"got {_describe(value)} (see mmpeft.types.Batch)")
    if pixel_values is not None and (not torch.is_tensor(pixel_values) or pixel_values.dim() != 4
                                     or not pixel_values.is_floating_point()):
        raise ValueError(f"batch key 'pixel_values' must be a [N_img, C, H, W] float tensor or None, got "
                         f"{_describe(pixel_values)} (see mmpeft.types.Batch)")


def check_batch(batch: Any) -> None:
    """That ``batch`` is a ``Batch``: every required key present, tensors of the documented shapes and dtypes,
    per-row lists of length B. Cheap (no values read, no device sync): run on every batch entering training.

    Raises:
        ValueError naming the missing or mis-shaped key.
    """
    if not isinstance(batch, dict):
        raise ValueError(f"a batch must be a dict (mmpeft.types.Batch), got {type(batch).__name__}")
    missing = sorted(Batch.__required_keys__ - set(batch))
    if missing:
        raise ValueError(f"batch is missing key(s) {missing}; a Batch has {sorted(Batch.__required_keys__)} "
                         "(build batches with mmpeft.data.collate.Collator)")
    check_model_inputs(*(batch[k] for k in MODEL_INPUTS))
    b = batch["input_ids"].shape[0]
    has_image, num_images = batch["has_image"], batch["num_images"]
    if not torch.is_tensor(has_image) or has_image.dtype != torch.bool or tuple(has_image.shape) != (b,):
        raise ValueError(f"batch key 'has_image' must be a [B] = [{b}] bool tensor, got {_describe(has_image)}")
    if not torch.is_tensor(num_images) or not _is_integer(num_images) or tuple(num_images.shape) != (b,):
        raise ValueError(f"batch key 'num_images' must be a [B] = [{b}] integer tensor, got {_describe(num_images)}")
    for key in ("id", "source", "eval"):
        if key in batch and (not isinstance(batch[key], list) or len(batch[key]) != b):
            raise ValueError(f"batch key {key!r} must be a list of B = {b} entries, got {_describe(batch[key])}")
    for key in ("epoch", "index"):
        if key in batch and (not isinstance(batch[key], int) or isinstance(batch[key], bool)):
            raise ValueError(f"batch key {key!r} must be an int, got {_describe(batch[key])}")


def _is_integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"{str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return repr(value) if isinstance(value, int | float | str | None) else type(value).__name__


@dataclass
class VLMOutput:
    """What ``VisionLanguageModel.forward`` returns, aligned with its input ``[B, T]``.

    A soft prompt is the model's own business: its P positions are prepended inside the forward and removed before
    anything is returned, so position t of every tensor here is position t of ``input_ids``.

    Attributes:
        loss: mean next-token cross-entropy over supervised positions (``None`` without labels; ``0.`` with a
            gradient path when a batch has no supervised token).
        num_supervised: number of positions that contributed to ``loss``.
        hidden_states: ``[B, T, D]`` final hidden states of the LLM (after its final norm); zeros at padding
            when the model packs sequences.
        logits: ``[B, T, V]``, only when the forward was asked for them (``return_logits=True``); never computed
            implicitly in training.
    """

    loss: torch.Tensor | None
    num_supervised: int
    hidden_states: torch.Tensor
    logits: torch.Tensor | None = None
