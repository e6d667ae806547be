"""Padding-free (packed) training computes exactly what the padded batch computes."""

from __future__ import annotations

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch

from mmpeft import packing
from mmpeft.adapters import AdapterSpec
from mmpeft.packing import PackedLayout, varlen_attention

ROWS = MIXED_ROWS + [(1, " a long question that pads the others out quite a lot more?", " yes it does.")]


def _loss_and_grads(vlm, batch):
    vlm.zero_grad()
    out = vlm(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in vlm.named_parameters() if p.requires_grad}
    return out, grads


def test_layout_round_trip_and_positions():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])  # right-padded, empty, left-padded
    layout = PackedLayout.from_attention_mask(mask)
    assert layout.cu_seqlens.tolist() == [0, 3, 6] and layout.max_length == 3
    assert layout.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    x = torch.randn(3, 4, 5)
    back = layout.unpack(layout.pack(x))
    assert torch.equal(back[mask.bool()], x[mask.bool()]) and not back[~mask.bool()].any()


@pytest.mark.parametrize("soft_prompt", [0, 3])
def test_packed_loss_and_grads_equal_padded(tiny, soft_prompt):
    spec = AdapterSpec("lora", r=4, alpha=8)
    padded = build_vlm(tiny, llm_spec=spec, vision_spec=spec, soft_prompt_tokens=soft_prompt)
    packed = build_vlm(tiny, llm_spec=spec, vision_spec=spec, pack_sequences=True, soft_prompt_tokens=soft_prompt)
    packed.load_state_dict(padded.state_dict())
    for p in padded.parameters():  # LoRA B starts at zero: make the adapters matter
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    packed.load_state_dict(padded.state_dict())
    batch = make_batch(padded, ROWS)
    assert batch["attention_mask"].float().mean() < 0.8  # real padding to remove
    out_a, grads_a = _loss_and_grads(padded, batch)
    out_b, grads_b = _loss_and_grads(packed, batch)
    torch.testing.assert_close(out_b.loss, out_a.loss, rtol=1e-5, atol=1e-6)
    mask = batch["attention_mask"].bool()
    assert out_b.hidden_states.shape[:2] == mask.shape, "aligned with the input: the prompt positions removed"
    torch.testing.assert_close(out_b.hidden_states[mask], out_a.hidden_states[mask], rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_equal_length_rows_take_the_dense_path_and_equal_padded(tiny, monkeypatch):
    """Rows of one length (fixed-length data) run dense causal SDPA over a view of the packed sequence: the same loss
    and gradients as the padded model, through the dense path (the profile that motivated it: docs/benchmarks.md)."""
    dense_calls = []
    dense = packing._sdpa_uniform
    monkeypatch.setattr(packing, "_sdpa_uniform", lambda *a: dense_calls.append(a[3:5]) or dense(*a))
    spec = AdapterSpec("lora", r=4, alpha=8)
    padded = build_vlm(tiny, llm_spec=spec)
    packed = build_vlm(tiny, llm_spec=spec, pack_sequences=True)
    for p in padded.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    packed.load_state_dict(padded.state_dict())
    batch = make_batch(padded, [ROWS[0]] * 3)
    assert bool(batch["attention_mask"].all())
    out_a, grads_a = _loss_and_grads(padded, batch)
    out_b, grads_b = _loss_and_grads(packed, batch)
    assert dense_calls and all(rows == 3 for rows, _ in dense_calls)
    torch.testing.assert_close(out_b.loss, out_a.loss, rtol=1e-5, atol=1e-6)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_dense_path_equals_per_row_attention(kv_heads):
    """Equal rows through the dense view give the per-row reference's outputs and input gradients (MHA and GQA)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, h, 15, 8, generator=g, requires_grad=True) for h in (4, kv_heads, kv_heads))
    cu = torch.tensor([0, 5, 10, 15], dtype=torch.int32)
    out, _ = varlen_attention(torch.nn.Module(), q, k, v, None, scaling=0.3, cu_seq_lens_q=cu, max_length_q=5)
    ref = packing._sdpa_per_row(q, k, v, cu, 0.3)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_packed_model_generates_like_padded(tiny):
    """Unpacked calls (generation with padding and a KV cache) fall back to SDPA with its masks."""
    padded = build_vlm(tiny)
    packed = build_vlm(tiny, pack_sequences=True)
    packed.load_state_dict(padded.state_dict())
    prompts = ["<image> what is it?", "<image> a much longer prompt about the picture, left padded?"]
    pixels = torch.randn(2, 3, *padded.vision.image_size, generator=torch.Generator().manual_seed(0))
    assert packed.generate(prompts, pixels, max_new_tokens=5) == padded.generate(prompts, pixels, max_new_tokens=5)


def test_packing_survives_the_config_round_trip(tiny):
    vlm = build_vlm(tiny, pack_sequences=True)
    rebuilt = type(vlm).from_config(vlm.config())
    assert rebuilt.pack_sequences and rebuilt.llm.model.config._attn_implementation == "mmpeft_varlen"


def test_per_row_attention_does_not_cross_rows():
    """Changing one packed row's keys leaves the other rows' outputs unchanged (GQA: 4 query, 2 kv heads)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 7, 8, generator=g) for h in (4, 2, 2))
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    module = torch.nn.Module()
    out, _ = varlen_attention(module, q, k, v, None, scaling=0.5, cu_seq_lens_q=cu, max_length_q=4)
    k2 = k.clone()
    k2[:, :, 3:] += 1.0
    out2, _ = varlen_attention(module, q, k2, v, None, scaling=0.5, cu_seq_lens_q=cu, max_length_q=4)
    assert out.shape == (1, 7, 4, 8)
    assert torch.equal(out[:, :3], out2[:, :3]) and not torch.equal(out[:, 3:], out2[:, 3:])
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, :, :3], k[:, :, :3].repeat_interleave(2, 1),
                                                           v[:, :, :3].repeat_interleave(2, 1), is_causal=True,
                                                           scale=0.5)
    torch.testing.assert_close(out[:, :3], ref.transpose(1, 2))


def test_unsupported_attention_variants_are_refused():
    q = torch.zeros(1, 2, 4, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        varlen_attention(torch.nn.Module(), q, q, q, None, cu_seq_lens_q=cu, max_length_q=4, sliding_window=4096)


def test_packed_calls_give_transformers_a_stand_in_mask_only_for_the_varlen_attention():
    """``mmpeft_varlen`` reads rows from cu_seqlens: a [1, 1, 1, 1] mask (transformers passes a 4D mask on as it
    is, no sync); flash attention would read a 4D mask as padding to remove, so it keeps the all-ones [1, N] mask."""
    layout = PackedLayout.from_attention_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert layout.attention_mask(packing.VARLEN_ATTENTION, torch.device("cpu")).shape == (1, 1, 1, 1)
    flash = layout.attention_mask("flash_attention_2", torch.device("cpu"))
    assert flash.shape == (1, 5) and bool(flash.all())
