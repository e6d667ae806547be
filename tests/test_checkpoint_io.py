import json

import pytest
import torch
from conftest import build_vlm

import mmpeft.callbacks.checkpoint_io as checkpoint_io
from mmpeft.adapters import AdapterSpec
from mmpeft.callbacks.checkpoint_io import SafetensorsCheckpointIO
from mmpeft.checkpoint import load_pretrained
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for


def sample_checkpoint(step):
    return {
        "global_step": step,
        "state_dict": {"vlm.projector.w": torch.full((2, 2), float(step))},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                              "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "foreach": None}]}],
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 1}}, "combined_loader": [{"epoch": 0}]}},
        "best": float("inf"),
    }


def test_round_trip_without_pickle(tmp_path):
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(sample_checkpoint(4), tmp_path / "step=4.ckpt")
    loaded = io.load_checkpoint(tmp_path / "step=4.ckpt")
    assert loaded["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["optimizer_states"][0]["state"][0]["step"].item() == 3.0 and loaded["best"] == float("inf")
    assert torch.equal(loaded["state_dict"]["vlm.projector.w"], torch.full((2, 2), 4.0))
    assert sorted(p.name for p in (tmp_path / "step=4.ckpt").iterdir()) == ["lightning.json", "lightning.safetensors"]


def test_killed_write_leaves_previous_checkpoint_or_nothing(tmp_path, monkeypatch):
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(sample_checkpoint(1), tmp_path / "last.ckpt")

    def dying_save(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing tensors")

    monkeypatch.setattr(checkpoint_io, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(sample_checkpoint(2), tmp_path / "last.ckpt")
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(sample_checkpoint(2), tmp_path / "step=2.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "no partial directory is left"
    assert io.load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 1, "the previous checkpoint is intact"


def test_unsupported_values_name_their_key(tmp_path):
    with pytest.raises(TypeError, match=r"'/callbacks/cb' has type object"):
        SafetensorsCheckpointIO().save_checkpoint({"callbacks": {"cb": object()}}, tmp_path / "x.ckpt")


def test_training_checkpoint_is_a_model_directory_with_format_and_fingerprints(tiny, tmp_path):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens, max_length=96,
                            system_prompt="Be brief.", use_chat_template=False)
    vlm.input_format = input_format_of(renderer)  # what VLMModule.setup does from the data config
    io = SafetensorsCheckpointIO()
    io.vlm = vlm
    io.save_checkpoint(sample_checkpoint(3), tmp_path / "step=3.ckpt")
    saved = json.loads((tmp_path / "step=3.ckpt" / "mmpeft_config.json").read_text())
    assert saved["extra"]["global_step"] == 3
    assert saved["input_format"]["system_prompt"] == "Be brief." and saved["input_format"]["max_length"] == 96
    assert saved["input_format"]["use_chat_template"] is False and saved["input_format"]["chat_template"] is None
    assert saved["base_fingerprints"] == vlm.base_fingerprints
    loaded = load_pretrained(tmp_path / "step=3.ckpt")
    assert loaded.input_format == vlm.input_format
    record = [{"role": "user", "content": "<image>\nWhat is it?"}]
    assert renderer_for(loaded).render_prompt(record) == renderer.render_prompt(record)
