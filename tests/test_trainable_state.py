"""The trainable state has one definition: a Lightning checkpoint and a model directory hold the same tensors.

``mmpeft.trainable_state`` defines it; ``VLMModule`` keeps those keys in Lightning checkpoints and hands the model
files made from them to ``SafetensorsCheckpointIO``; ``save_trainable`` writes the same files from the model.
"""

import copy
import json

import pytest
import torch
from conftest import build_vision, build_vlm
from safetensors.torch import load_file

from mmpeft.adapters import AdapterSpec, disabled_adapters
from mmpeft.adapters.inject import apply_adapter
from mmpeft.callbacks.checkpoint_io import STATE_JSON, STATE_TENSORS, SafetensorsCheckpointIO
from mmpeft.checkpoint import load_pretrained, save_trainable
from mmpeft.module import VLMModule
from mmpeft.towers.llm import LLMTower
from mmpeft.trainable_state import trainable_state
from mmpeft.vlm import VisionLanguageModel

CASES = {
    "projector_only": {},
    "lora_both_towers": dict(vision_spec=AdapterSpec("lora", init_weights=False),
                             llm_spec=AdapterSpec("lora", init_weights=False)),
    "dora_llm_ia3_vision": dict(vision_spec=AdapterSpec("ia3"), llm_spec=AdapterSpec("dora")),
    "full_llm": dict(llm_spec=AdapterSpec("full")),
    "full_vision": dict(vision_spec=AdapterSpec("full")),
    "full_vision_cnn": dict(vision="timm_cnn", vision_spec=AdapterSpec("full")),  # BatchNorm buffers: whole state
    "soft_prompt": dict(soft_prompt_tokens=3),
}


def moved(vlm):
    """Every trainable tensor away from its initial value, so a lost or swapped tensor shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in trainable_state(vlm).values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=g).to(tensor.dtype) * 0.01)
    return vlm


def lightning_checkpoint(vlm, step=1):
    """What Lightning's ``dump_checkpoint`` hands the IO: the module's state dict, then ``on_save_checkpoint``."""
    module = VLMModule(vlm)
    checkpoint = {"global_step": step, "epoch": 0, "state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def model_directory(directory):
    """``{relative path: tensors or JSON}`` of a directory's model files (the Lightning files left out)."""
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = str(path.relative_to(directory))
        if path.is_file() and relative not in (STATE_JSON, STATE_TENSORS):
            files[relative] = load_file(path) if path.suffix == ".safetensors" else json.loads(path.read_text())
    return files


@pytest.mark.parametrize("case", CASES)
def test_lightning_checkpoint_and_model_directory_hold_the_same_state(tiny, tmp_path, case):
    vlm = moved(build_vlm(tiny, **CASES[case]))
    checkpoint = lightning_checkpoint(vlm)
    held = checkpoint["state_dict"]
    trains = {f"vlm.{n}" for n, p in vlm.named_parameters() if p.requires_grad}
    whole = ("vlm.projector.", *(f"vlm.{name}." for name in vlm.fully_trained_modules()))
    assert trains <= set(held), "every trained tensor is in the checkpoint"
    assert all(k in trains or k.startswith(whole) for k in held), "and nothing of a frozen base"

    SafetensorsCheckpointIO().save_checkpoint(checkpoint, tmp_path / "step=1.ckpt")
    save_trainable(vlm, tmp_path / "saved", extra={"global_step": 1, "epoch": 0})
    from_lightning, saved = model_directory(tmp_path / "step=1.ckpt"), model_directory(tmp_path / "saved")
    assert list(from_lightning) == list(saved)
    for name, content in saved.items():
        if name.endswith(".safetensors"):
            assert content.keys() == from_lightning[name].keys(), name
            assert all(torch.equal(v, from_lightning[name][k]) for k, v in content.items()), name
        else:
            assert content == from_lightning[name], name
    tensors = [k for name, content in saved.items() if name.endswith(".safetensors") for k in content]
    assert len(tensors) == len(held), "the model files hold what the Lightning checkpoint holds, no more, no less"

    loaded = load_pretrained(tmp_path / "step=1.ckpt").state_dict()
    for key, value in held.items():
        assert torch.equal(loaded[key.removeprefix("vlm.")], value), key


def test_a_fully_trained_tower_keeps_its_buffers(tiny):
    """BatchNorm running statistics of a fully trained CNN tower change in training: a resume without them would
    normalise with the base's statistics."""
    vlm = build_vlm(tiny, vision="timm_cnn", vision_spec=AdapterSpec("full"))
    buffers = {f"vlm.vision.model.{n}" for n, _ in vlm.vision.model.named_buffers()}
    assert any(n.endswith("running_mean") for n in buffers)
    assert buffers <= set(lightning_checkpoint(vlm)["state_dict"])


def test_adapter_config_is_what_peft_writes(tiny, tmp_path):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("dora"))
    save_trainable(vlm, tmp_path / "ckpt")
    config = copy.deepcopy(vlm.llm_peft_config)
    config.base_model_name_or_path, config.task_type = vlm.llm.init_args["name"], "CAUSAL_LM"
    config.save_pretrained(tmp_path / "peft")
    ours, peft = (json.loads((d / "adapter_config.json").read_text()) for d in (tmp_path / "ckpt" / "llm_adapter",
                                                                                 tmp_path / "peft"))
    for c in (ours, peft):
        c["target_modules"] = sorted(c["target_modules"])  # a set in peft: its order is the hash order
    assert ours == peft


def test_full_tuning_is_read_from_the_specs_not_marked_on_modules(tiny):
    vlm = build_vlm(tiny, vision_spec=AdapterSpec("lora"), llm_spec=AdapterSpec("full"))
    assert list(vlm.fully_trained_modules()) == ["llm.model"] and vlm.fully_trained_modules()["llm.model"] is \
        vlm.llm.model
    assert not any(k.startswith("mmpeft") for m in vlm.modules() for k in vars(m)), "no marker on foreign modules"
    with disabled_adapters(vlm):  # its base weights were kept when it was made trainable (tests/test_adapters.py)
        pass
    with disabled_adapters(vlm.vision):  # a LoRA tower alone: its base is there
        pass


def test_a_fully_trained_tower_alone_gives_its_base_and_refuses_without_a_kept_copy(tiny):
    tower = build_vision(tiny)
    apply_adapter(tower.model, AdapterSpec("full"), [])
    pixels = torch.randn(1, 3, *tower.image_size)
    with torch.no_grad():
        before = tower(pixels)
        for p in tower.parameters():
            p.add_(0.1)
        trained = tower(pixels)
        with disabled_adapters(tower):
            torch.testing.assert_close(tower(pixels), before, rtol=0, atol=0)
        torch.testing.assert_close(tower(pixels), trained, rtol=0, atol=0)
    other = build_vision(tiny)
    other.requires_grad_(True)  # trainable without apply_adapter: no base copy
    with pytest.raises(ValueError, match="fully fine-tuned"):
        with disabled_adapters(other):
            pass


def test_fully_trained_llm_with_tied_embeddings_saves_and_loads(tiny, tmp_path):
    tied = LLMTower(str(tiny.llm))
    tied.model.config.tie_word_embeddings = True
    tied.model.tie_weights()
    tied.model.save_pretrained(tmp_path / "tied_llm")
    tied.tokenizer.save_pretrained(tmp_path / "tied_llm")
    torch.manual_seed(0)
    vlm = moved(VisionLanguageModel(build_vision(tiny), LLMTower(str(tmp_path / "tied_llm")),
                                    llm_adapter=AdapterSpec("full")))
    head = vlm.llm.model.get_output_embeddings().weight
    assert head is vlm.llm.model.get_input_embeddings().weight, "one matrix under two names"
    save_trainable(vlm, tmp_path / "ckpt")  # safetensors refuses shared memory: the writer copies the repeat
    loaded = load_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.llm.model.get_output_embeddings().weight, head)
