"""Exports that other tools load: ``--format hf-llava`` (plain transformers), the tied ``lm_head`` stored once, and
the adapter directory that ``peft.AutoPeftModelForCausalLM`` loads. Offline, on the tiny towers."""

import json
import shutil
from functools import partial

import pytest
import torch
from conftest import build_vision, build_vlm
from open_clip import OPENAI_DATASET_STD
from PIL import Image
from safetensors import safe_open

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import TINY_TIMM_VIT_KWARGS
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.hf_llava_export import export_hf_llava
from mmpeft.projectors import LinearProjector, MLPProjector, PooledMLPProjector
from mmpeft.towers import OpenClipVisionTower, TimmVisionTower
from mmpeft.towers.llm import LLMTower
from mmpeft.vlm import VisionLanguageModel


def _adapted(vlm: VisionLanguageModel) -> VisionLanguageModel:
    with torch.no_grad():  # a projector that differs from its initialisation
        for p in vlm.projector.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vlm


def _image() -> Image.Image:
    """48x40, not the tower's 32x32: the processor has to resize (shortest edge) and centre-crop."""
    g = torch.Generator().manual_seed(3)
    return Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy())


def _prompt_ids_and_pixels(directory, conversation, **processor_options):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(directory, **processor_options)
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return processor(images=[_image()], text=text, add_special_tokens=False, return_tensors="pt")


def _vision(tiny, family: str, keep_prefix_tokens: bool):
    """Towers with an exact HF form; feature_layer=-2 so that pruning and the layer index both matter."""
    if family == "open_clip":
        return OpenClipVisionTower(tiny.open_clip, feature_layer=-2, keep_prefix_tokens=keep_prefix_tokens)
    torch.manual_seed(1)
    timm_name = {"timm_clip": "vit_base_patch16_clip_quickgelu_224",  # CLS + norm_pre, QuickGELU -> CLIP
                 "timm_clip_two_layers": "vit_base_patch16_clip_224",
                 "timm_clip_patch_bias": "vit_base_patch16_clip_224",
                 "timm_siglip": "vit_base_patch16_siglip_224"}[family]  # no CLS, no pre-norm -> SigLIP
    layers = [-1, 0] if family == "timm_clip_two_layers" else -2  # concatenated per token, in this order
    tower = TimmVisionTower(timm_name, image_size=32, model_kwargs=TINY_TIMM_VIT_KWARGS, feature_layer=layers,
                            keep_prefix_tokens=keep_prefix_tokens)
    if family == "timm_clip_patch_bias":  # CLIP's conv has none: the export folds it into the position embedding
        proj = tower.model.patch_embed.proj
        proj.bias = torch.nn.Parameter(torch.randn(proj.out_channels) * 0.5, requires_grad=False)
    return tower


@pytest.mark.parametrize("family, llm, system_prompt, use_chat_template, keep_prefix_tokens", [
    ("open_clip", "llm", None, True, False),  # the tokenizer's chat template, CLS dropped ("default")
    ("open_clip", "llm", "Answer briefly.", False, True),  # USER/ASSISTANT fallback + system prompt, CLS kept
    ("open_clip", "llm_without_image_token", "Be terse.", True, False),  # <image> added: vocab grew by one row
    ("timm_clip", "llm", None, True, True),
    ("timm_clip_patch_bias", "llm", None, True, False),
    ("timm_clip_two_layers", "llm", None, True, False),  # feature_layer [-1, 0] -> vision_feature_layer [2, 1]
    ("timm_siglip", "llm", None, True, False),  # no CLS: "full" whatever keep_prefix_tokens says
])
def test_hf_llava_round_trip_matches_mmpeft(tiny, tmp_path, family, llm, system_prompt, use_chat_template,
                                            keep_prefix_tokens):
    """transformers alone (no trust_remote_code, offline) loads the export; for one prompt and image it gives
    mmpeft's prompt ids, pixel values, logits and greedy tokens."""
    from transformers import LlavaForConditionalGeneration

    vision = _vision(tiny, family, keep_prefix_tokens)
    vlm = _adapted(VisionLanguageModel(vision, LLMTower(str(getattr(tiny, llm))),
                                       vision_adapter=AdapterSpec("lora", init_weights=False),
                                       llm_adapter=AdapterSpec("lora", init_weights=False)))
    from mmpeft.data.chat import ChatRenderer

    vlm.input_format = input_format_of(ChatRenderer(vlm.llm.tokenizer, "<image>", vlm.num_image_tokens,
                                                    system_prompt=system_prompt, use_chat_template=use_chat_template))
    export_hf_llava(vlm, tmp_path / "hf")

    conversation = [{"role": "user", "content": "<image>\nWhat color is the picture?"}]
    inputs = _prompt_ids_and_pixels(tmp_path / "hf", conversation, backend="pil")
    # the processor renders and expands the prompt exactly as mmpeft does
    assert inputs["input_ids"][0].tolist() == renderer_for(vlm).render_prompt(conversation)
    # pixel values (48x40 -> bicubic, shortest edge 32 -> centre crop 32x32): the PIL backend of the saved
    # CLIPImageProcessor equals the open_clip transform exactly; transformers' default torchvision backend resizes
    # tensors and lands within one 8-bit level (1/255 / std <= 0.0146) on a few pixels
    ours = vlm.vision.image_transform(_image()).unsqueeze(0)
    torch.testing.assert_close(inputs["pixel_values"], ours, rtol=0, atol=0)
    default_backend = _prompt_ids_and_pixels(tmp_path / "hf", conversation)["pixel_values"]
    torch.testing.assert_close(default_backend, ours, rtol=0, atol=1 / 255 / min(OPENAI_DATASET_STD) + 1e-6)

    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        hf_logits = model(**inputs).logits
        ids = inputs["input_ids"]
        ours_logits = vlm(input_ids=ids, pixel_values=ours, return_logits=True).logits
    torch.testing.assert_close(hf_logits, ours_logits, rtol=1e-4, atol=1e-4)
    expected = vlm.generate_ids([ids[0].tolist()], ours, max_new_tokens=8)
    got = model.generate(**inputs, max_new_tokens=8, do_sample=False)[:, ids.shape[1]:]
    assert got.shape[1] > 0 and got.tolist() == expected[:, : got.shape[1]].tolist()


def test_hf_llava_cli_and_layout(tiny, tmp_path):
    vlm = _adapted(build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False)))
    save_trainable(vlm, tmp_path / "ckpt")
    cli_main(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--format", "hf-llava"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_config"]["model_type"] == "clip_vision_model"
    assert config["vision_feature_layer"] == -1 and config["vision_feature_select_strategy"] == "default"
    assert config["image_seq_length"] == vlm.num_image_tokens == 16
    assert config["vision_config"]["num_hidden_layers"] == 2  # feature_layer=-1 of 2 blocks: both kept
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora_" in k or "base_layer" in k]
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["suppress_tokens"] == [
        vlm.llm.image_token_id]


@pytest.mark.parametrize("change, message", [
    (dict(projector=LinearProjector), "LinearProjector has no LLaVA counterpart"),
    (dict(projector=partial(PooledMLPProjector, output_grid=2)), "PooledMLPProjector has no LLaVA counterpart"),
    (dict(projector=partial(MLPProjector, num_layers=3)), "MLPProjector has 3 layers"),
    (dict(projector=partial(MLPProjector, input_norm="layernorm")), "normalises its input"),
    (dict(soft_prompt_tokens=2), "soft prompt"),
    (dict(vision="timm_vit"), "has a class token and Identity pre-norm: CLIPVisionModel needs both, "
                              "SiglipVisionModel neither"),
    (dict(vision="timm_cnn"), "'tf_efficientnet_lite0' .EfficientNet. is not a ViT"),
])
def test_hf_llava_refuses_what_it_cannot_express(tiny, tmp_path, change, message):
    vlm = build_vlm(tiny, **change)
    with pytest.raises(ValueError, match=f"cannot export this model as --format hf-llava: .*{message}.*"
                                         "export the standalone mmpeft format instead"):
        export_hf_llava(vlm, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_hf_llava_refuses_final_norm_features(tiny, tmp_path):
    vlm = VisionLanguageModel(OpenClipVisionTower(tiny.open_clip, feature_layer=None), LLMTower(str(tiny.llm)))
    with pytest.raises(ValueError, match="feature_layer=None applies open_clip's final LayerNorm"):
        export_hf_llava(vlm, tmp_path / "hf")
    with pytest.raises(SystemExit):  # the CLI offers only the two formats
        cli_main(["export", str(tmp_path), str(tmp_path / "x"), "--format", "gguf"])


@pytest.fixture
def tied_llm(tiny, tmp_path):
    """The tiny LLM with ``tie_word_embeddings=True`` (as SmolLM2, Gemma, Qwen2-0.5B are)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny.llm)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.get_input_embeddings().weight
    model.save_pretrained(tmp_path / "tied_llm")
    AutoTokenizer.from_pretrained(tiny.llm).save_pretrained(tmp_path / "tied_llm")
    return tmp_path / "tied_llm"


def test_export_stores_tied_lm_head_once(tiny, tied_llm, tmp_path):
    vlm = _adapted(VisionLanguageModel(build_vision(tiny), LLMTower(str(tied_llm)),
                                       llm_adapter=AdapterSpec("lora", init_weights=False)))
    assert vlm.llm.model.lm_head.weight is vlm.llm.model.get_input_embeddings().weight
    export(vlm, tmp_path / "export")
    with safe_open(tmp_path / "export" / "llm" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    reloaded = load_pretrained(tmp_path / "export")
    head, embed = reloaded.llm.model.lm_head.weight, reloaded.llm.model.get_input_embeddings().weight
    assert head is embed or head.data_ptr() == embed.data_ptr()
    torch.testing.assert_close(embed, vlm.llm.model.get_input_embeddings().weight, rtol=0, atol=0)
    export_hf_llava(vlm, tmp_path / "hf")  # the LLaVA export keeps it tied too
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in list(f.keys())


def test_adapter_directory_loads_with_auto_peft(tiny, tmp_path):
    """The base is recorded as transformers can resolve it: a ``zoo:`` LLM as its local directory."""
    from peft import AutoPeftModelForCausalLM

    from mmpeft.zoo import tiny_dir

    if not (tiny_dir() / "llm" / "config.json").exists():  # what `mmpeft tiny-towers` writes there (same seed)
        shutil.copytree(tiny.llm, tiny_dir() / "llm")
    vlm = _adapted(VisionLanguageModel(build_vision(tiny), LLMTower("zoo:tiny/llm"),
                                       llm_adapter=AdapterSpec("lora", init_weights=False)))
    save_trainable(vlm, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "llm_adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_dir() / "llm")
    assert json.loads((tmp_path / "ckpt" / "mmpeft_config.json").read_text())["vlm"]["llm"]["init_args"][
        "name"] == "zoo:tiny/llm"  # mmpeft's own record is unchanged
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ckpt" / "llm_adapter").eval()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        ref = vlm.llm.model(input_ids=ids).logits
        torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=0, atol=1e-6)
        with model.disable_adapter():  # the adapter matters: without it the logits differ
            assert not torch.allclose(model(input_ids=ids).logits, ref, atol=1e-3)
