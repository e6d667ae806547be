import json
import re
from pathlib import Path

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from safetensors.torch import load_file

from mmpeft.adapters import AdapterSpec
from mmpeft.checkpoint import atomic_directory, export, load_pretrained, save_trainable
from mmpeft.towers.llm import LLMTower


def _trained(tiny, vision="open_clip", **kwargs):
    vlm = build_vlm(tiny, vision=vision, vision_spec=AdapterSpec("lora", init_weights=False),
                    llm_spec=AdapterSpec("lora", init_weights=False), **kwargs)
    with torch.no_grad():  # make projector and soft prompt differ from a fresh build
        for p in vlm.parameters():
            if p.requires_grad and "lora_" not in str(p):
                p.add_(0.01)
    return vlm


@pytest.mark.parametrize("vision", ["open_clip", "timm_vit", "timm_cnn"])
def test_save_reload_reproduces_logits(tiny, tmp_path, vision):
    vlm = _trained(tiny, vision, soft_prompt_tokens=2)
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    save_trainable(vlm, tmp_path / "ckpt", extra={"step": 7})
    files = sorted(str(p.relative_to(tmp_path / "ckpt")) for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
    assert files == ["llm_adapter/adapter_config.json", "llm_adapter/adapter_model.safetensors",
                     "mmpeft_config.json", "trainable.safetensors", "vision_adapter/adapter_config.json",
                     "vision_adapter/adapter_model.safetensors"]
    trainable = load_file(tmp_path / "ckpt" / "trainable.safetensors")
    assert set(trainable) == {f"projector.{k}" for k in vlm.projector.state_dict()} | {"soft_prompt.embeddings"}
    saved = sum(v.numel() for f in (tmp_path / "ckpt").rglob("*.safetensors") for v in load_file(f).values())
    assert saved == sum(r.trainable for r in vlm.trainability()), "trainable state only, nothing frozen"
    reloaded = load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch, return_logits=True).logits, ref)
    assert json.loads((tmp_path / "ckpt" / "mmpeft_config.json").read_text())["extra"] == {"step": 7}


def test_llm_adapter_is_readable_by_peft(tiny, tmp_path):
    from peft import PeftModel

    vlm = _trained(tiny)
    save_trainable(vlm, tmp_path / "ckpt")
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        ref = vlm.llm.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(LLMTower(str(tiny.llm)).model, tmp_path / "ckpt" / "llm_adapter")
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ref, rtol=0, atol=0)


def test_load_into_mismatched_model_fails_clearly(tiny, tmp_path):
    save_trainable(_trained(tiny), tmp_path / "ckpt")
    other_rank = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora", r=4))
    with pytest.raises(ValueError, match=r"llm_adapter.*does not fit this model.*shape mismatch"):
        load_pretrained(tmp_path / "ckpt", other_rank)
    from functools import partial

    from mmpeft.projectors import MLPProjector

    other_projector = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("lora"),
                                projector=partial(MLPProjector, hidden_dim=32))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(tmp_path / "ckpt", other_projector)
    with pytest.raises(FileNotFoundError, match="not an mmpeft checkpoint"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_export_matches_unmerged_greedy_outputs(tiny, tmp_path, method):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec(method, init_weights=False),
                    llm_spec=AdapterSpec(method, init_weights=False), soft_prompt_tokens=2)
    prompts = ["<image> what color is the circle?", "The capital of France is"]
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = vlm.generate_ids(prompts, pixels, max_new_tokens=8)
    export(vlm, tmp_path / "export")
    assert (tmp_path / "export" / "llm" / "config.json").is_file()
    llm_keys = load_file(tmp_path / "export" / "llm" / "model.safetensors").keys()
    assert not [k for k in llm_keys if re.search("lora_|base_layer", k)], "a plain HF checkpoint"
    exported = load_pretrained(tmp_path / "export")
    assert exported.llm_adapter.method == "frozen" and exported.vision_adapter.method == "frozen"
    assert torch.equal(exported.generate_ids(prompts, pixels, max_new_tokens=8), expected)
    # the source model is left unmerged and still adapted
    assert torch.equal(vlm.generate_ids(prompts, pixels, max_new_tokens=8), expected)


def test_atomic_directory_keeps_old_contents_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("new, half written")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "no temporary directory left behind"


def test_no_unsafe_unpickling_in_package():
    root = Path(__file__).parents[1] / "mmpeft"
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: torch.load without weights_only=True"
            assert "trust_remote_code=True" not in line, f"{path}: trust_remote_code must stay opt-in"
