"""Stage-2 initialisation (``model.init_from``) refuses a stage-1 checkpoint trained on other frozen bases."""

import json
import logging
import shutil

import pytest
import torch
from test_cli import fit_args

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_llm, save_tiny_towers
from mmpeft.checkpoint import save_trainable
from mmpeft.module import VLMModule
from mmpeft.stage_init import init_from_checkpoint
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.vision import OpenClipVisionTower
from mmpeft.vlm import VisionLanguageModel


def build(vision: str, llm: str, seed: int, feature_layer: int = -1) -> VisionLanguageModel:
    torch.manual_seed(seed)  # the projector's initialisation: stage 1 and stage 2 start from different draws
    return VisionLanguageModel(OpenClipVisionTower(vision, feature_layer=feature_layer), LLMTower(llm),
                               llm_adapter=AdapterSpec("lora", init_weights=False))


@pytest.fixture
def stage1(tiny, tmp_path):
    """A stage-1 checkpoint on the tiny towers, and a second tiny LLM: same architecture and tokenizer, other
    random weights (the "different base")."""
    vlm = build(tiny.open_clip, str(tiny.llm), seed=0)
    save_trainable(vlm, tmp_path / "stage1")
    other_llm = save_tiny_llm(tmp_path / "other_llm", seed=1)
    return tmp_path / "stage1", vlm, other_llm


def projector_state(vlm):
    return {k: v.clone() for k, v in vlm.projector.state_dict().items()}


def test_init_from_takes_projector_and_adapters_on_the_same_base(tiny, stage1):
    ckpt, trained, _ = stage1
    fresh = build(tiny.open_clip, str(tiny.llm), seed=1)
    init_from_checkpoint(fresh, str(ckpt))
    for k, v in projector_state(trained).items():
        assert torch.equal(fresh.projector.state_dict()[k], v)
    assert all(torch.equal(a, b) for a, b in zip(fresh.llm.model.parameters(), trained.llm.model.parameters()))


def test_init_from_refuses_another_base_naming_checkpoint_tower_and_fix(tiny, stage1, caplog):
    ckpt, trained, other_llm = stage1
    fresh = build(tiny.open_clip, str(other_llm), seed=1)
    before = projector_state(fresh)
    with pytest.raises(ValueError, match=r"model.init_from=.*stage1/mmpeft_config.json: the frozen base .* differs.*"
                                         r"llm \(.*other_llm\): weights: saved sha256.*"
                                         r"model.init_from_allow_base_mismatch") as info:
        init_from_checkpoint(fresh, str(ckpt))
    assert "vision (" not in str(info.value), "only the replaced tower is reported"
    assert all(torch.equal(fresh.projector.state_dict()[k], v) for k, v in before.items()), "nothing loaded"
    with pytest.raises(ValueError, match="init_from_allow_base_mismatch"):  # the module option goes the same way
        VLMModule(build(tiny.open_clip, str(other_llm), seed=1), init_from=str(ckpt))
    with caplog.at_level(logging.WARNING, logger="mmpeft.fingerprint"):  # the explicit override loads, loudly
        module = VLMModule(fresh, init_from=str(ckpt), init_from_allow_base_mismatch=True)
    assert "loading anyway" in caplog.text and "llm (" in caplog.text
    for k, v in projector_state(trained).items():
        assert torch.equal(module.vlm.projector.state_dict()[k], v)


def test_init_from_a_directory_without_config_or_fingerprints(tiny, stage1, tmp_path, caplog):
    ckpt, _, _ = stage1
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(ckpt / "trainable.safetensors", bare)
    fresh = build(tiny.open_clip, str(tiny.llm), seed=1)
    with pytest.raises(FileNotFoundError, match=r"model.init_from=.*bare.*mmpeft_config.json not found"):
        init_from_checkpoint(fresh, str(bare))
    config = json.loads((ckpt / "mmpeft_config.json").read_text())
    del config["base_fingerprints"]  # written before fingerprints: warned about, not refused
    (ckpt / "mmpeft_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="mmpeft.fingerprint"):
        init_from_checkpoint(fresh, str(ckpt))
    assert "has no base_fingerprints" in caplog.text


def test_cli_stage2_refuses_another_base_unless_allowed(tmp_path):
    towers = save_tiny_towers(tmp_path / "towers")
    # stage 1 as configs/model/tiny.yaml builds it (open_clip feature_layer -2, MLP projector)
    save_trainable(build(f"local-dir:{towers / 'open_clip'}", str(towers / "llm"), seed=0, feature_layer=-2),
                   tmp_path / "stage1")
    other_llm = save_tiny_llm(tmp_path / "other_llm", seed=1)
    args = fit_args(towers, tmp_path / "stage2", "--config", "configs/peft/lora_both.yaml",
                    f"--model.init_from={tmp_path / 'stage1'}", f"--model.vlm.llm.init_args.name={other_llm}",
                    "--trainer.limit_val_batches=1", command="validate")
    with pytest.raises(ValueError, match=r"llm \(.*other_llm\): weights.*--model.init_from_allow_base_mismatch"):
        cli_main(args)
    cli = cli_main(args + ["--model.init_from_allow_base_mismatch=true"])
    assert cli.model.vlm.base_fingerprints["llm"]["weights"] is not None


def test_init_from_a_damaged_trainable_file_names_the_option_and_file(tiny, stage1):
    ckpt, _, _ = stage1
    path = ckpt / "trainable.safetensors"
    path.write_bytes(path.read_bytes()[:40])  # an interrupted copy
    with pytest.raises(ValueError, match=r"model.init_from=.*stage1: .*trainable.safetensors .* is damaged"):
        init_from_checkpoint(build(tiny.open_clip, str(tiny.llm), seed=1), str(ckpt))
