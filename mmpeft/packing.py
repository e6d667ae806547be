"""Padding-free training: the rows of a padded batch packed into one sequence with per-row attention.

A padded batch ``[B, T]`` with ``N`` real tokens costs ``B * T`` positions in every linear layer and ``B * T^2`` in
attention. Packed, it costs ``N`` and ``sum_i L_i^2``: the real tokens of all rows are laid end to end
(``[1, N, D]``), each row restarts its position ids at 0, and attention runs per row through cumulative sequence
lengths (``cu_seqlens``), as flash attention's variable-length kernels take them. Nothing crosses rows, so the
loss and gradients equal the padded computation's (tested on CPU).

``VARLEN_ATTENTION`` is registered with transformers' ``AttentionInterface``: with ``cu_seq_lens_q`` among the
attention kwargs it runs, when every packed row has the same length, dense causal SDPA over the rows (a view, no
copy; the kernel torch picks for a padded batch), otherwise torch's variable-length flash attention (CUDA,
bf16/fp16) or, elsewhere, exact per-row SDPA; without them (generation, evaluation, unpacked batches) it is plain
SDPA with SDPA's masks. So one LLM serves packed training and padded generation.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

VARLEN_ATTENTION = "mmpeft_varlen"


@dataclass
class PackedLayout:
    """Where the real tokens of a padded ``[B, T]`` batch go in the packed ``[1, N]`` sequence.

    Built where the mask lives: on the CPU (``mmpeft.batch_plan``, then moved with ``to``) it costs the device
    nothing; on a GPU it syncs the host twice (the token positions and the row lengths are sizes). Packing and
    unpacking gather and scatter with integer positions, which never sync.

    Attributes:
        rows, cols: ``[N]`` int64, the row and column of each real token in row-major order (the packed order).
        position_ids: ``[1, N]`` positions restarting at 0 for each row.
        cu_seqlens: ``[B' + 1]`` int32 cumulative lengths of the non-empty rows.
        max_length: the longest row (a Python int: kernels size their grid with it).
        shape: ``(B, T)`` of the padded batch.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_length: int
    shape: tuple[int, int]

    @classmethod
    def from_attention_mask(cls, attention_mask: torch.Tensor) -> PackedLayout:
        """Layout of a right- or left-padded ``[B, T]`` 0/1 mask (real tokens need not be contiguous per row:
        their order within a row is kept and positions count real tokens only, as the padded path does)."""
        mask = attention_mask.bool()
        rows, cols = mask.nonzero(as_tuple=True)  # row-major
        positions = mask.long().cumsum(dim=1) - 1  # [B, T] position of each real token within its row
        kept = [n for n in mask.sum(dim=1).tolist() if n > 0]
        cu = torch.zeros(len(kept) + 1, dtype=torch.int32)
        cu[1:] = torch.tensor(kept, dtype=torch.int32).cumsum(0)
        return cls(rows=rows, cols=cols, position_ids=positions[rows, cols].unsqueeze(0),
                   cu_seqlens=cu.to(mask.device), max_length=max(kept, default=0), shape=tuple(mask.shape))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedLayout:
        """The same layout with its tensors on ``device`` (``non_blocking``: see ``to_device``)."""
        def move(t):
            return to_device(t, device, non_blocking)

        return replace(self, rows=move(self.rows), cols=move(self.cols), position_ids=move(self.position_ids),
                       cu_seqlens=move(self.cu_seqlens))

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` -> ``[1, N, ...]`` (real tokens only)."""
        return padded[self.rows, self.cols].unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``[1, N, D]`` -> ``[B, T, D]`` with zeros at padding (differentiable)."""
        out = packed.new_zeros(*self.shape, packed.shape[-1])
        return out.index_put((self.rows, self.cols), packed[0])

    def attention_mask(self, attn_implementation: str, device: torch.device) -> torch.Tensor:
        """What the packed forward passes transformers as ``attention_mask``. For ``VARLEN_ATTENTION``, which reads
        the rows from ``cu_seqlens``, a ``[1, 1, 1, 1]`` stand-in: transformers returns a 4D mask as it is, where
        an all-ones 2D mask costs a host sync (it asks whether every position is attended). Flash attention reads
        a 4D mask as padding to remove, so it gets the all-ones ``[1, N]`` mask as before."""
        if attn_implementation == VARLEN_ATTENTION:
            return torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
        return torch.ones_like(self.position_ids)

    def attention_kwargs(self) -> dict[str, object]:
        """The keyword arguments transformers passes down to every attention call (flash-attention names)."""
        return {"cu_seq_lens_q": self.cu_seqlens, "cu_seq_lens_k": self.cu_seqlens,
                "max_length_q": self.max_length, "max_length_k": self.max_length}


def to_device(tensor: torch.Tensor, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
    """``tensor.to(device)``; ``non_blocking`` only to a GPU, and from the CPU through pinned memory (torch's caching
    host allocator), because a copy from pageable memory waits for everything queued on the device first."""
    device = torch.device(device)
    non_blocking = non_blocking and device.type == "cuda"  # a copy to the CPU is read at once: it must finish
    if non_blocking and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=non_blocking)


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs):
    """transformers attention function: ``query [1, Hq, N, Dh]``, ``key/value [1, Hkv, N, Dh]`` ->
    ``([1, N, Hq, Dh], None)``; causal within each packed row given ``cu_seq_lens_q``, else plain SDPA."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got batch {query.shape[0]}")
    if dropout > 0.0 and module.training:
        raise ValueError("packed attention does not implement attention dropout; set the LLM's attention_dropout=0")
    unsupported = [k for k in ("sliding_window", "softcap", "s_aux") if kwargs.get(k) not in (None, 0, False)]
    if unsupported:
        raise NotImplementedError(f"packed attention does not implement {unsupported} (this LLM uses them); set "
                                  "model.vlm.pack_sequences=false, or use attn_implementation=flash_attention_2")
    max_length = int(kwargs.get("max_length_q") or 0)
    rows = cu.shape[0] - 1
    if rows * max_length == query.shape[2]:
        # every row equally long (fixed-length data): dense causal SDPA over [rows, H, L, Dh], whose kernel choice
        # (cuDNN's fused attention on Hopper) ran 1.5-1.7x as fast as the variable-length flash kernel on an H200
        out = _sdpa_uniform(query, key, value, rows, max_length, scaling)
    elif query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and _torch_varlen() is not None:
        out = _flash_varlen(query, key, value, cu, max_length, scaling)
    else:
        out = _sdpa_per_row(query, key, value, cu, scaling)
    return out, None


def _sdpa_uniform(query, key, value, rows: int, length: int, scaling):
    """Packed rows of one ``length``: ``[1, H, rows * length, Dh]`` viewed as ``[rows, H, length, Dh]`` (no copy;
    any strides whose last dimension is contiguous, as SDPA takes them), causal SDPA, back to ``[1, N, Hq, Dh]``."""
    def as_rows(t):
        return t[0].unflatten(1, (rows, length)).transpose(0, 1)

    gqa = query.shape[1] != key.shape[1]
    out = F.scaled_dot_product_attention(as_rows(query), as_rows(key), as_rows(value), is_causal=True,
                                         scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).reshape(1, rows * length, query.shape[1], query.shape[3])


def _flash_varlen(query, key, value, cu, max_length, scaling):
    varlen_attn, causal_kwargs, has_gqa = _torch_varlen()
    q = query[0].transpose(0, 1)  # [N, Hq, Dh]
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    extra = {}
    if q.shape[1] != k.shape[1]:
        if has_gqa:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = varlen_attn(q, k, v, cu, cu, max_length, max_length, scale=scaling, **causal_kwargs, **extra)
    return out.unsqueeze(0)  # [1, N, Hq, Dh]


def _sdpa_per_row(query, key, value, cu, scaling):
    rep = query.shape[1] // key.shape[1]
    if rep > 1:
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    bounds = cu.tolist()
    rows = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True,
                                           scale=scaling) for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(rows, dim=2).transpose(1, 2)  # [1, N, Hq, Dh]


@functools.cache
def _torch_varlen():
    """``(varlen_attn, causal kwargs, supports enable_gqa)`` of this torch, or None when it has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters  # the keyword for causality changed across releases
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    return varlen_attn, causal, "enable_gqa" in params


def register_varlen_attention() -> str:
    """Register ``VARLEN_ATTENTION`` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if VARLEN_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)
        AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)  # unpacked calls get SDPA's masks
    return VARLEN_ATTENTION
