import pytest
import torch
from conftest import MIXED_ROWS, build_vision, build_vlm, make_batch
from torch import nn

from mmpeft.adapters import AdapterSpec, disabled_adapters
from mmpeft.trainability import format_trainability


def _linear_targets(module, names):
    mods = dict(module.named_modules())
    return [mods[n] for n in names]


def _lora_count(layers, r):
    total = 0
    for m in layers:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += r * m.in_channels * k + m.out_channels * r
        else:
            total += r * (m.in_features + m.out_features)
    return total


def test_llm_lora_default_targets_exact_count(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", r=8))
    rows = {r.component: r for r in vlm.trainability()}
    # 2 layers x r=8 x (q 64+64, k 64+32, v 64+32, o 64+64, gate 64+128, up 64+128, down 128+64)
    assert rows["llm"].trainable == 16384
    assert rows["vision"].trainable == 0 and rows["vision"].method == "frozen"
    assert rows["projector"].trainable == 2 * (64 * 64 + 64)  # MLP 64 -> 64 -> 64
    trainable = [n for n, p in vlm.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert "lm_head" not in " ".join(trainable)
    table = format_trainability(vlm.trainability())
    assert "| llm | lora | 16,384 |" in table


@pytest.mark.parametrize("method,expected", [("dora", 16384 + 2 * 512), ("ia3", 2 * 576), ("loha", 2 * 16384)])
def test_llm_other_methods_exact_count(tiny, method, expected):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec(method, r=8))
    assert {r.component: r.trainable for r in vlm.trainability()}["llm"] == expected


@pytest.mark.parametrize("family", ["open_clip", "timm_vit", "timm_cnn"])
def test_vision_lora_exact_count_per_family(tiny, family):
    targets = build_vision(tiny, family).default_adapter_targets()
    vlm = build_vlm(tiny, vision=family, vision_spec=AdapterSpec("lora", r=4))
    base_layers = [m.base_layer for m in _linear_targets(vlm.vision.model, targets)]
    expected = _lora_count(base_layers, 4)
    assert {r.component: r.trainable for r in vlm.trainability()}["vision"] == expected
    assert {"open_clip": 10240 // 2, "timm_vit": 16384 // 2}.get(family, expected) == expected


def test_full_and_frozen_and_soft_prompt_counts(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("full"), soft_prompt_tokens=3, train_projector=False)
    rows = {r.component: r for r in vlm.trainability()}
    assert rows["llm"].frozen == 0 and rows["llm"].trainable == sum(p.numel() for p in vlm.llm.parameters())
    assert rows["projector"].trainable == 0
    assert rows["soft_prompt"].trainable == 3 * 64


def test_target_regex_selects_and_rejects(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", r=2, targets=r"layers\.1\..*(q|v)_proj$"))
    names = [n for n, p in vlm.llm.named_parameters() if p.requires_grad]
    assert len(names) == 4 and all(".layers.1." in n for n in names)
    with pytest.raises(ValueError, match=r"matches no adaptable layer.*q_proj"):
        build_vlm(tiny, llm_spec=AdapterSpec("lora", targets=r"attention\.query$"))
    with pytest.raises(ValueError, match="not a valid regex"):
        build_vlm(tiny, llm_spec=AdapterSpec("lora", targets=r"(q_proj"))


def test_spec_validation():
    with pytest.raises(ValueError, match=r"method='adalora' is not one of"):
        AdapterSpec("adalora")
    with pytest.raises(ValueError, match="r must be >= 1"):
        AdapterSpec("lora", r=0)


def test_base_weights_bit_identical_after_optimizer_step(tiny):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora"), soft_prompt_tokens=2)
    frozen = {n: p.detach().clone() for n, p in vlm.named_parameters() if not p.requires_grad}
    buffers = {n: b.clone() for n, b in vlm.named_buffers()}
    trainable = {n: p.detach().clone() for n, p in vlm.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    vlm.train()
    for _ in range(2):  # two steps so LoRA A (zero grad while B == 0) moves as well
        loss = vlm(**make_batch(vlm, MIXED_ROWS)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in vlm.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
        else:
            assert not torch.equal(p, trainable[n]), f"trainable {n} did not move"
    assert all(torch.equal(b, buffers[n]) for n, b in vlm.named_buffers())


METHODS = ["lora", "dora", "ia3", "loha", "lokr"]


@pytest.mark.parametrize("method", METHODS)
def test_disabled_adapters_equal_base_exactly_and_restore_requires_grad(tiny, method):
    adapted = build_vlm(tiny, vision_spec=AdapterSpec(method, init_weights=False),
                        llm_spec=AdapterSpec(method, init_weights=False))
    base = build_vlm(tiny)
    base.projector.load_state_dict(adapted.projector.state_dict())
    batch = make_batch(adapted, MIXED_ROWS)
    flags = {n: p.requires_grad for n, p in adapted.named_parameters()}
    with torch.no_grad():
        base_logits = base(**batch, return_logits=True).logits
        adapted_logits = adapted(**batch, return_logits=True).logits
        with disabled_adapters(adapted):
            disabled_logits = adapted(**batch, return_logits=True).logits
    assert not torch.equal(adapted_logits, base_logits), "non-trivial adapters must change the output"
    assert torch.equal(disabled_logits, base_logits)
    assert flags == {n: p.requires_grad for n, p in adapted.named_parameters()}


def test_disabled_soft_prompt_gives_base(tiny):
    adapted = build_vlm(tiny, soft_prompt_tokens=3)
    base = build_vlm(tiny)
    base.projector.load_state_dict(adapted.projector.state_dict())
    batch = make_batch(adapted, MIXED_ROWS)
    with torch.no_grad():
        base_logits = base(**batch, return_logits=True).logits
        with disabled_adapters(adapted):
            assert torch.equal(adapted(**batch, return_logits=True).logits, base_logits)
        prompted = adapted(**batch, return_logits=True).logits
    assert prompted.shape == base_logits.shape, "the prompt stays inside the model: outputs aligned with the input"
    assert not torch.equal(prompted, base_logits), "the enabled prompt changes the output"


def test_disabled_adapters_gives_the_base_of_a_fully_tuned_llm_and_the_trained_weights_back(tiny, tmp_path):
    """Full tuning keeps a copy of the base: inside disabled_adapters the tuned LLM computes exactly the base (so
    the KL guard, probes and eval compare against it), after it exactly its trained self; a saved and reloaded
    checkpoint has the same base (the copy is taken before the trained weights load)."""
    from mmpeft.checkpoint import load_pretrained, save_trainable

    vlm = build_vlm(tiny, llm_spec=AdapterSpec("full"))
    base = build_vlm(tiny)
    base.projector.load_state_dict(vlm.projector.state_dict())
    with torch.no_grad():
        for p in vlm.llm.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # "training"
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        base_logits = base(**batch, return_logits=True).logits
        tuned_logits = vlm(**batch, return_logits=True).logits
        with disabled_adapters(vlm):
            assert torch.equal(vlm(**batch, return_logits=True).logits, base_logits)
        assert torch.equal(vlm(**batch, return_logits=True).logits, tuned_logits)
    assert not torch.equal(tuned_logits, base_logits)
    assert all(p.requires_grad for p in vlm.llm.parameters())
    save_trainable(vlm, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch, return_logits=True).logits, tuned_logits)
        with disabled_adapters(loaded):
            torch.testing.assert_close(loaded(**batch, return_logits=True).logits, base_logits)


def test_disabled_adapters_refuses_full_tuning_without_a_base_copy(tiny):
    vlm = build_vlm(tiny)
    vlm.llm.requires_grad_(True)  # made trainable outside apply_adapter: no base copy was kept
    with pytest.raises(ValueError, match="fully fine-tuned module"):
        with disabled_adapters(vlm.llm):
            pass


def test_gradients_reach_adapters_after_a_reference_pass(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad(), disabled_adapters(vlm):
        vlm(**batch)
    vlm(**batch).loss.backward()
    lora = [p for n, p in vlm.llm.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.parametrize("family", ["open_clip", "timm_vit", "timm_cnn"])
def test_every_vision_family_trains_with_lora(tiny, family):
    vlm = build_vlm(tiny, vision=family, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora"))
    vlm(**make_batch(vlm, MIXED_ROWS)).loss.backward()
    grads = {n: p.grad for n, p in vlm.vision.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in vlm.vision.parameters() if not p.requires_grad)
