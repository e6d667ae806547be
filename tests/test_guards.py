import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from peft.tuners.tuners_utils import BaseTunerLayer

from mmpeft.adapters import AdapterSpec
from mmpeft.adapters.deltas import adapter_layers, delta_sq_norm, delta_weight
from mmpeft.adapters.inject import disabled_adapters
from mmpeft.guards import EWC, L2SP, KLToBase, LwF, Replay
from mmpeft.guards.ewc import estimate_fisher, save_fisher
from mmpeft.module import VLMModule
from mmpeft.types import IGNORE_INDEX


def guarded_batch(vlm):
    return make_batch(vlm, MIXED_ROWS, image_flags=True)


def perturb(vlm, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vlm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def terms(module, batch):
    return module._losses(batch)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "loha", "lokr"])
def test_delta_weight_equals_merged_minus_base(tiny, method):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec(method, init_weights=False))
    for layer in adapter_layers(vlm.llm.model).values():
        base = layer.get_base_layer().weight.detach().clone()
        delta = delta_weight(layer).detach()
        layer.merge()
        merged = layer.get_base_layer().weight.detach().clone()
        layer.unmerge()
        torch.testing.assert_close(delta, merged - base, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(delta_sq_norm(layer), delta.pow(2).sum(), rtol=1e-4, atol=1e-7)


def test_guards_zero_at_init_positive_after_perturbation(tiny, tmp_path):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora"))
    batch = guarded_batch(vlm)
    fisher, meta = estimate_fisher(vlm, [batch])
    path = save_fisher(tmp_path / "fisher.safetensors", fisher, meta)
    guards = [KLToBase(), LwF(), L2SP(), EWC(str(path))]
    module = VLMModule(vlm, guards=guards)
    for g in guards:
        g.setup(vlm)
    at_init = terms(module, batch)
    for name in ("kl_to_base", "lwf", "l2sp", "ewc"):
        assert at_init[name].item() == 0.0, name
    perturb(vlm)
    after = terms(module, batch)
    for name in ("kl_to_base", "lwf", "l2sp", "ewc"):
        assert after[name].item() > 0, name


def test_guard_gradients_reach_only_trainable_parameters(tiny, tmp_path):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora", init_weights=False))
    batch = guarded_batch(vlm)
    fisher, meta = estimate_fisher(vlm, [batch])
    guards = [KLToBase(rows="all"), LwF(), L2SP(), EWC(str(save_fisher(tmp_path / "f.safetensors", fisher, meta))),
              Replay()]
    module = VLMModule(vlm, guards=guards)
    for g in guards:
        g.setup(vlm)
    for name in ("kl_to_base", "lwf", "l2sp", "ewc", "replay"):
        vlm.zero_grad(set_to_none=True)
        terms(module, batch)[name].backward()
        frozen_with_grad = [n for n, p in vlm.named_parameters() if not p.requires_grad and p.grad is not None]
        assert not frozen_with_grad, (name, frozen_with_grad[:3])
        llm_lora = [p for n, p in vlm.llm.named_parameters() if "lora_" in n]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in llm_lora), name


def test_reference_pass_leaves_model_unchanged(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    module = VLMModule(vlm, guards=[KLToBase(rows="all")])
    batch = guarded_batch(vlm)
    flags = {n: p.requires_grad for n, p in vlm.named_parameters()}
    before = vlm(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}).hidden_states
    rows, reference = module._reference_pass(batch)
    after = vlm(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}).hidden_states
    assert torch.equal(before, after)
    assert flags == {n: p.requires_grad for n, p in vlm.named_parameters()}
    assert rows.tolist() == [True, True, True] and not reference.requires_grad
    base = build_vlm(tiny)
    base.projector.load_state_dict(vlm.projector.state_dict())
    with torch.no_grad():
        expected = base(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}).hidden_states
    assert torch.equal(reference, expected), "the reference is the exact base"


@pytest.mark.parametrize("soft_prompt", [0, 2])
def test_task_and_replay_split_rows(tiny, soft_prompt):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False), soft_prompt_tokens=soft_prompt)
    module = VLMModule(vlm, guards=[Replay()])
    batch = guarded_batch(vlm)
    losses = terms(module, batch)
    text = batch["labels"].masked_fill(batch["has_image"].unsqueeze(1), IGNORE_INDEX)
    images = batch["labels"].masked_fill(~batch["has_image"].unsqueeze(1), IGNORE_INDEX)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    torch.testing.assert_close(losses["replay"], vlm(**inputs, labels=text).loss)
    torch.testing.assert_close(losses["task"], vlm(**inputs, labels=images).loss)
    torch.testing.assert_close(losses["loss"], losses["task"] + losses["replay"])


@pytest.mark.parametrize("soft_prompt", [0, 3])
@pytest.mark.parametrize(("guard", "rows", "temperature"), [(KLToBase(), "text", 1.0),
                                                            (KLToBase(rows="all", temperature=1.5), "all", 1.5),
                                                            (LwF(), "image", 2.0)])
def test_distillation_equals_kl_of_full_logits(tiny, soft_prompt, guard, rows, temperature):
    """The guards' KL, from the aligned [B, T] outputs, equals T^2 KL(base || adapted) of the full logits averaged
    over the real non-image positions of the chosen rows; a soft prompt belongs to the adapted side only."""
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False), soft_prompt_tokens=soft_prompt)
    module = VLMModule(vlm, guards=[guard])
    batch = guarded_batch(vlm)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        adapted = vlm(**inputs, return_logits=True).logits.float() / temperature
        with disabled_adapters(vlm):
            base = vlm(**inputs, return_logits=True).logits.float() / temperature
    chosen = {"text": ~batch["has_image"], "image": batch["has_image"], "all": torch.ones(3, dtype=torch.bool)}[rows]
    positions = batch["attention_mask"].bool() & (batch["input_ids"] != vlm.llm.image_token_id) & chosen[:, None]
    log_base, log_adapted = base.log_softmax(-1)[positions], adapted.log_softmax(-1)[positions]
    expected = (log_base.exp() * (log_base - log_adapted)).sum() / positions.sum() * temperature**2
    torch.testing.assert_close(terms(module, batch)[guard.name], expected, rtol=1e-4, atol=1e-6)


def test_ewc_fisher_for_other_shapes_is_a_clear_error(tiny, tmp_path):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", targets=r"q_proj$"))
    fisher, meta = estimate_fisher(vlm, [guarded_batch(vlm)])
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    path = save_fisher(tmp_path / "q.safetensors", fisher, meta)
    other = build_vlm(tiny, llm_spec=AdapterSpec("lora", targets=r"(q|v)_proj$"))
    expected = r"q.safetensors does not fit this model: missing \['model.layers.0.self_attn.v_proj"
    with pytest.raises(ValueError, match=expected):
        EWC(str(path)).setup(other)
    assert isinstance(next(iter(adapter_layers(other.llm.model).values())), BaseTunerLayer)


def test_l2sp_on_fully_trained_llm_measures_distance_from_start(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("full"))
    module = VLMModule(vlm, guards=[L2SP(towers=["llm"])])
    module.guards[0].setup(vlm)
    batch = guarded_batch(vlm)
    assert terms(module, batch)["l2sp"].item() == 0.0
    with torch.no_grad():
        vlm.llm.model.lm_head.weight.add_(0.5)
    expected = 0.25 * vlm.llm.model.lm_head.weight.numel()
    torch.testing.assert_close(terms(module, batch)["l2sp"], torch.tensor(expected), rtol=1e-5, atol=1e-3)
