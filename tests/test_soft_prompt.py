"""The soft prompt lives inside the model: outputs are aligned with the input, and the loss, gradients and
generation equal what prepending the prompt by hand and calling the LLM gives."""

from __future__ import annotations

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch

from mmpeft.adapters import AdapterSpec
from mmpeft.types import IGNORE_INDEX

P = 3


def _prompted(tiny, **kwargs):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False), soft_prompt_tokens=P, **kwargs)
    vlm.train()
    return vlm


def _by_hand(vlm, batch):
    """The old layout, from first principles: images spliced into the token embeddings row by row, the prompt's
    P vectors prepended, labels IGNORE there, and the HF LLM's own shifted cross-entropy and logits."""
    ids, mask, labels, pixels = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"]
    embeds = vlm.llm.model.get_input_embeddings()(ids)
    images = iter(vlm.projector(vlm.vision(pixels)))  # [M, D] each, reading order
    rows = []
    for row_ids, row in zip(ids, embeds):
        parts, t = [], 0
        while t < len(row_ids):
            if row_ids[t] == vlm.llm.image_token_id:
                parts.append(next(images))
                t += vlm.num_image_tokens
            else:
                parts.append(row[t : t + 1])
                t += 1
        rows.append(torch.cat(parts))
    b = ids.shape[0]
    prompt = vlm.soft_prompt.embeddings.unsqueeze(0).expand(b, -1, -1)
    out = vlm.llm.model(inputs_embeds=torch.cat([prompt, torch.stack(rows)], dim=1),
                        attention_mask=torch.cat([torch.ones(b, P, dtype=mask.dtype), mask], dim=1),
                        labels=torch.cat([torch.full((b, P), IGNORE_INDEX), labels], dim=1))
    return out.loss, out.logits[:, P:]


def _grads(vlm):
    return {n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pack", [False, True])
def test_loss_and_gradients_equal_prepending_the_prompt_by_hand(tiny, pack):
    vlm = _prompted(tiny, pack_sequences=pack)
    batch = make_batch(vlm, MIXED_ROWS)
    assert (batch["labels"][:, 0] == IGNORE_INDEX).all(), "as the renderer makes them: BOS is never supervised"
    expected_loss, expected_logits = _by_hand(vlm, batch)
    expected_loss.backward()
    expected_grads = _grads(vlm)
    vlm.zero_grad(set_to_none=True)
    out = vlm(**batch, return_logits=True)
    out.loss.backward()
    grads = _grads(vlm)
    b, t = batch["input_ids"].shape
    assert out.hidden_states.shape[:2] == (b, t) and out.logits.shape[:2] == (b, t)
    torch.testing.assert_close(out.loss, expected_loss, rtol=1e-5, atol=1e-6)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits[real], expected_logits[real], rtol=1e-4, atol=1e-5)
    assert "soft_prompt.embeddings" in grads and grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("prompt", [0, P])
def test_the_first_label_is_never_a_target(tiny, prompt):
    """Nothing of the input precedes position 0; with a prompt its last position could predict it, but the model
    scores the same tokens as without one (so the adapted model and its base compare like with like)."""
    vlm = build_vlm(tiny, soft_prompt_tokens=prompt)
    batch = make_batch(vlm, MIXED_ROWS)
    reference = vlm(**batch)
    labels = batch["labels"].clone()
    labels[:, 0] = batch["input_ids"][:, 0]
    supervised_first = vlm(**{**batch, "labels": labels})
    assert supervised_first.num_supervised == reference.num_supervised
    assert torch.equal(supervised_first.loss, reference.loss)


def test_generation_with_a_prompt_is_greedy_decoding_of_the_forward(tiny):
    """``generate_ids`` (prompt prepended inside, KV cache) picks, at every step, the argmax of the forward's
    last-position logits for the prompt plus the tokens so far (image placeholders suppressed)."""
    vlm = _prompted(tiny)
    pixels = torch.randn(1, 3, *vlm.vision.image_size, generator=torch.Generator().manual_seed(0))
    prompt = "<image> what color is the circle?"
    generated = vlm.generate_ids([prompt], pixels, max_new_tokens=5)[0].tolist()
    ids = vlm.tokenize_prompts([prompt])[0]
    vlm.eval()
    expected = []
    with torch.no_grad():
        for _ in range(5):
            logits = vlm(input_ids=torch.tensor([ids + expected]), pixel_values=pixels, return_logits=True).logits
            last = logits[0, -1]
            last[vlm.llm.image_token_id] = -float("inf")
            expected.append(int(last.argmax()))
            if expected[-1] == vlm.llm.tokenizer.eos_token_id:
                break
    assert generated[: len(expected)] == expected
