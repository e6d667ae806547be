import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import MIXED_ROWS, build_vlm, make_batch

from mmpeft.adapters import AdapterSpec
from mmpeft.types import IGNORE_INDEX
from mmpeft.vlm import VisionLanguageModel


def test_images_spliced_at_placeholders_in_reading_order(tiny):
    vlm = build_vlm(tiny)
    batch = make_batch(vlm, MIXED_ROWS)
    embeds = vlm.embed_inputs(batch["input_ids"], batch["pixel_values"], batch["labels"])
    image_embeds = vlm.encode_images(batch["pixel_values"])  # [3 images, M, D]
    m = vlm.num_image_tokens
    # row 0: BOS then image 0; row 2: BOS then images 1 and 2 back to back; row 1 has none
    torch.testing.assert_close(embeds[0, 1 : 1 + m], image_embeds[0], rtol=0, atol=0)
    torch.testing.assert_close(embeds[2, 1 : 1 + m], image_embeds[1], rtol=0, atol=0)
    torch.testing.assert_close(embeds[2, 1 + m : 1 + 2 * m], image_embeds[2], rtol=0, atol=0)
    text = vlm.llm.embed(batch["input_ids"])
    not_image = batch["input_ids"] != vlm.llm.image_token_id
    assert torch.equal(embeds[not_image], text[not_image])


def test_loss_only_on_supervised_tokens(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    batch = make_batch(vlm, MIXED_ROWS)
    out = vlm(**batch)
    answer_lengths = [len(vlm.llm.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for *_, a in MIXED_ROWS]
    assert out.num_supervised == sum(answer_lengths)
    is_image = batch["input_ids"] == vlm.llm.image_token_id
    assert (batch["labels"][is_image] == IGNORE_INDEX).all()
    # Gradient of the loss w.r.t. the prediction at image, prompt and padding positions is exactly zero.
    hidden = out.hidden_states.detach().requires_grad_(True)
    loss, _ = vlm.supervised_loss(hidden, batch["labels"])
    loss.backward()
    predicts_target = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts_target[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    assert (hidden.grad[~predicts_target] == 0).all()
    assert (hidden.grad[predicts_target].abs().sum(-1) > 0).all()


def test_padding_content_does_not_change_loss(tiny):
    vlm = build_vlm(tiny)
    batch = make_batch(vlm, MIXED_ROWS)
    ref = vlm(**batch).loss
    noisy = dict(batch)
    noisy["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)
    assert torch.equal(vlm(**noisy).loss, ref)


def test_supervised_position_loss_equals_full_logits_loss(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    batch = make_batch(vlm, MIXED_ROWS)
    out = vlm(**batch, return_logits=True)
    full = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, full, rtol=1e-6, atol=1e-6)
    embeds = vlm.embed_inputs(batch["input_ids"], batch["pixel_values"], batch["labels"])
    hf = vlm.llm.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(out.loss, hf, rtol=1e-5, atol=1e-6)


def test_text_only_rows_never_reach_the_vision_tower(tiny):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"))
    calls = []
    vlm.vision.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    vlm(**make_batch(vlm, MIXED_ROWS))
    assert calls == [3], "one call for the 3 images of rows 0 and 2; the text-only row adds none"
    calls.clear()
    vlm(**make_batch(vlm, [(0, " hello", " world"), (0, " a", " b")]))
    assert calls == []


def test_frozen_vision_tower_runs_without_autograd(tiny):
    outputs = []
    for spec in (None, AdapterSpec("lora")):
        vlm = build_vlm(tiny, vision_spec=spec)
        vlm.vision.register_forward_hook(lambda mod, args, out: outputs.append(out.requires_grad))
        vlm(**make_batch(vlm, MIXED_ROWS)).loss.backward()
    assert outputs == [False, True]


def test_text_only_batch_without_supervision_keeps_graph(tiny):
    vlm = build_vlm(tiny)
    batch = make_batch(vlm, [(1, " hi", "")])
    batch["labels"][:] = IGNORE_INDEX
    out = vlm(**batch)
    assert out.num_supervised == 0 and out.loss.item() == 0.0
    out.loss.backward()  # zero gradients of the same structure, never an error (matters for DDP)
    assert all(p.grad is not None for p in vlm.projector.parameters())


def test_placeholder_image_mismatch_is_a_clear_error(tiny):
    vlm = build_vlm(tiny)
    batch = make_batch(vlm, MIXED_ROWS)
    with pytest.raises(ValueError, match=r"2 image\(s\) x 16 tokens each need 32 placeholder ids.*\[16, 0, 32\]"):
        vlm(**{**batch, "pixel_values": batch["pixel_values"][:2]})
    with pytest.raises(ValueError, match="placeholders and images disagree"):
        vlm(**{**batch, "pixel_values": None})
    bad = batch["input_ids"].clone()
    bad[0, 1] = 5  # one placeholder short in row 0: 15 is not a multiple of 16
    with pytest.raises(ValueError, match="Expand each image placeholder"):
        vlm(input_ids=bad, pixel_values=batch["pixel_values"])
    labels = batch["labels"].clone()
    labels[0, 1] = 3
    with pytest.raises(ValueError, match="labels must be IGNORE_INDEX"):
        vlm(**{**batch, "labels": labels})


def test_batched_left_padded_generation_equals_one_by_one(tiny):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False), soft_prompt_tokens=2)
    prompts = ["<image> what color is the circle?", "The capital of France is", "<image><image> how many?"]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batched = vlm.generate_ids(prompts, pixels, max_new_tokens=6)
    singles = [vlm.generate_ids([prompts[0]], pixels[:1], max_new_tokens=6),
               vlm.generate_ids([prompts[1]], None, max_new_tokens=6),
               vlm.generate_ids([prompts[2]], pixels[1:], max_new_tokens=6)]
    for row, single in zip(batched, singles):
        n = single.shape[1]
        assert row[:n].tolist() == single[0].tolist()
    texts = vlm.generate(prompts, pixels, max_new_tokens=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_sampling_is_seeded(tiny):
    vlm = build_vlm(tiny)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(vlm.generate_ids(["The capital"], max_new_tokens=8, do_sample=True, temperature=1.5, top_k=50))
    assert torch.equal(runs[0], runs[1])


def test_vlm_imports_without_lightning():
    code = ("import sys, mmpeft.vlm, mmpeft.checkpoint; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_config_builds_only_allowed_classes(tiny, tmp_path):
    vlm = build_vlm(tiny)
    config = vlm.config()
    assert config["llm"]["class_path"] == "mmpeft.towers.llm.LLMTower"
    yaml_style = {**config, "vision": {**config["vision"], "class_path": "mmpeft.towers.OpenClipVisionTower"},
                  "projector": {**config["projector"], "class_path": "mmpeft.projectors.MLPProjector"}}
    assert type(VisionLanguageModel.from_config(yaml_style).vision) is type(vlm.vision), "re-exported names work"
    pwned = tmp_path / "pwned"
    for key, class_path in (("projector", "subprocess.Popen"), ("llm", "os.system"),
                            ("projector", "mmpeft.towers.llm.LLMTower"),  # allowed, but not as a projector
                            ("vision", "mmpeft.vlm.VisionLanguageModel")):
        crafted = {**config, key: {"class_path": class_path, "init_args": {"args": ["touch", str(pwned)]}}}
        with pytest.raises(ValueError, match=rf"run.json: key vlm.{key}.class_path names '{class_path}', which is "
                                             r"not an allowed class.*allow_classes="):
            VisionLanguageModel.from_config(crafted, source="run.json", key_prefix="vlm.")
    assert not pwned.exists()
    with pytest.raises(ValueError, match=r"key projector.init_args does not fit mmpeft.projectors.MLPProjector"):
        VisionLanguageModel.from_config({**config, "projector": {**config["projector"], "init_args": {"cmd": "x"}}})
    with pytest.raises(ValueError, match="soft_prompt_tokens = '2' must be of type int"):
        VisionLanguageModel.from_config({**config, "soft_prompt_tokens": "2"})
    kernel = {**config, "llm": {**config["llm"], "init_args": {**config["llm"]["init_args"],
                                                               "attn_implementation": "someone/flash-kernel"}}}
    with pytest.raises(ValueError, match=r"key llm.init_args.attn_implementation = 'someone/flash-kernel' names a hub "
                                         "kernel"):
        VisionLanguageModel.from_config(kernel)
