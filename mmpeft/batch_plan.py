"""A batch's plan: what its values decide, worked out on the CPU so a GPU forward never waits to be told.

A training forward asks questions of its inputs' values: where the image placeholders are, how long each row
is and where its real tokens go when packed (``mmpeft.packing``), which positions are supervised. Asked of
tensors on a GPU, each answer is a host sync (a count or a list read back): the CPU waits until the GPU has run
everything queued, then the GPU idles until the CPU has queued more. ``BatchPlan.build`` answers them while the
batch is still on the CPU (``VLMModule`` does it in ``on_before_batch_transfer``); the plan's integer positions
travel to the device with the batch (``to``, which Lightning calls as it moves the batch), and the forward only
gathers and scatters with them. The results equal the forward without a plan (tested, and on CPU no sync at all).
What the plan does not cover still syncs: guards' sub-batches (their reference pass, replay rows), evaluation.

Pure PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mmpeft.packing import PackedLayout, to_device
from mmpeft.types import IGNORE_INDEX

PLAN_KEY = "batch_plan"  # where VLMModule keeps a training batch's plan in the batch dict


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, targets)``, each ``[K]``: the positions ``(b, t)`` of ``labels [B, T]`` whose next label is
    supervised (position t predicts ``labels[b, t + 1]``; ``IGNORE_INDEX`` is not), row-major, and those labels.
    On a GPU, K is read back (one sync)."""
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows, cols, labels[rows, cols + 1]


@dataclass
class BatchPlan:
    """Positions of one batch, for ``VisionLanguageModel.forward(..., plan=...)``.

    Attributes:
        shape: ``(B, T)`` of ``input_ids``.
        image_rows, image_cols: ``[N_img * M]`` int64 positions of the image placeholders, row-major (the order
            images fill them in).
        num_tokens: the batch's real tokens (``attention_mask`` summed; logs read it without a sync).
        layout: where the LLM's real input tokens go when packed (over ``[B, P+T]``, the soft prompt's P
            positions included), or None for a model that does not pack.
        supervised_rows, supervised_cols: ``[K]`` int64 positions ``(b, t)`` of the hidden states ``[B, T]`` whose
            next label is supervised (``labels[b, t + 1] != IGNORE_INDEX``), row-major.
        targets: ``[K]`` int64, those labels (``num_supervised``: K).
        has_labels: whether the plan was made with labels (without, K is 0 and the forward has no loss).
    """

    shape: tuple[int, int]
    image_rows: torch.Tensor
    image_cols: torch.Tensor
    num_tokens: int
    layout: PackedLayout | None
    supervised_rows: torch.Tensor
    supervised_cols: torch.Tensor
    targets: torch.Tensor
    has_labels: bool

    @classmethod
    def build(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None,
              image_token_id: int, prefix_tokens: int, pack: bool) -> BatchPlan:
        """The plan of a batch (its tensors where the batch is: build it on the CPU).

        Args:
            input_ids, attention_mask, labels: ``[B, T]`` as the forward will get them (labels None: no loss).
            image_token_id: the placeholder id.
            prefix_tokens: P, the soft prompt's positions the model prepends (0 without one).
            pack: whether the model packs its rows (``pack_sequences``).
        """
        b, t = input_ids.shape
        layout = None
        if pack:
            mask = attention_mask if prefix_tokens == 0 else torch.cat(
                [attention_mask.new_ones(b, prefix_tokens), attention_mask], dim=1)
            layout = PackedLayout.from_attention_mask(mask)
        if labels is None:
            rows = cols = targets = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        else:
            rows, cols, targets = supervised_positions(labels)
        image_rows, image_cols = (input_ids == image_token_id).nonzero(as_tuple=True)
        return cls(shape=(b, t), image_rows=image_rows, image_cols=image_cols,
                   num_tokens=int(attention_mask.sum()), layout=layout, supervised_rows=rows, supervised_cols=cols,
                   targets=targets, has_labels=labels is not None)

    @property
    def num_supervised(self) -> int:
        """K, the supervised positions (a shape: known on the host)."""
        return self.supervised_rows.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = True) -> BatchPlan:
        """The same plan with its tensors on ``device``. Non-blocking by default (Lightning moves a batch's other
        objects with a plain ``.to(device)``): from the CPU through pinned memory (``mmpeft.packing.to_device``)."""
        def move(t):
            return to_device(t, device, non_blocking)

        layout = None if self.layout is None else self.layout.to(device, non_blocking=non_blocking)
        return replace(self, image_rows=move(self.image_rows), image_cols=move(self.image_cols), layout=layout,
                       supervised_rows=move(self.supervised_rows), supervised_cols=move(self.supervised_cols),
                       targets=move(self.targets))

    def check_fits(self, input_ids: torch.Tensor, labels: torch.Tensor | None, pixel_values: torch.Tensor | None,
                   image_tokens: int, prefix_tokens: int) -> None:
        """ValueError unless this plan fits the forward's inputs, from shapes alone (no value read): ``input_ids``'
        shape, labels given or not as planned, as many images (``image_tokens`` placeholders each) as planned
        placeholder positions, and an LLM input of ``prefix_tokens`` soft prompt positions more (a plan made before
        a soft prompt was switched on or off no longer fits). Values changed after planning (labels edited in
        place) are not seen: plan the batch as the forward will get it."""
        b, t = input_ids.shape
        llm_input = (b, t + prefix_tokens)
        images = 0 if pixel_values is None else pixel_values.shape[0]
        why = None
        if (b, t) != self.shape or (self.layout is not None and llm_input != self.layout.shape):
            planned = "none" if self.layout is None else list(self.layout.shape)
            why = (f"it was made for input_ids {list(self.shape)} and LLM input {planned}, but the forward got "
                   f"input_ids {[b, t]} and LLM input {list(llm_input)}")
        elif (labels is not None) != self.has_labels:
            why = f"it was made {'with' if self.has_labels else 'without'} labels, and the forward got the opposite"
        elif images * image_tokens != self.image_rows.shape[0]:
            why = (f"it holds {self.image_rows.shape[0]} image placeholder positions, and the forward got {images} "
                   f"image(s) of {image_tokens} tokens")
        if why is not None:
            raise ValueError(f"the batch plan does not fit this forward: {why}; build the plan with the model's "
                             "plan_batch for this batch, as the model is now")
