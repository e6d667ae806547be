import json
import multiprocessing
import os

import pytest
import torch
from conftest import build_vlm

import mmpeft.callbacks.checkpoint_io as checkpoint_io
from mmpeft.adapters import AdapterSpec
from mmpeft.atomic_directory import recover_directory
from mmpeft.callbacks.checkpoint_io import SafetensorsCheckpointIO
from mmpeft.checkpoint import load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import input_format_of, renderer_for
from mmpeft.module import VLMModule


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
    checkpoint = {**sample_checkpoint(3), "state_dict": VLMModule(vlm).state_dict()}
    VLMModule(vlm).on_save_checkpoint(checkpoint)  # the module hands the model files to the IO in the dict
    SafetensorsCheckpointIO().save_checkpoint(checkpoint, tmp_path / "step=3.ckpt")
    saved = json.loads((tmp_path / "step=3.ckpt" / "mmpeft_config.json").read_text())
    assert saved["extra"]["global_step"] == 3
    assert saved["input_format"]["system_prompt"] == "Be brief." and saved["input_format"]["max_length"] == 96
    assert saved["input_format"]["use_chat_template"] is False and saved["input_format"]["chat_template"] is None
    assert saved["base_fingerprints"] == vlm.base_fingerprints
    loaded = load_pretrained(tmp_path / "step=3.ckpt")
    assert loaded.input_format == vlm.input_format
    record = [{"role": "user", "content": "<image>\nWhat is it?"}]
    assert renderer_for(loaded).render_prompt(record) == renderer.render_prompt(record)


def names(directory):
    return sorted(p.name.rsplit("-", 1)[0] if ".ckpt." in p.name else p.name for p in directory.iterdir())


def rename_failing_at_swap(fail):
    """``os.rename`` that calls ``fail()`` instead of the second rename of a swap (``.tmp-`` -> the target)."""
    real = os.rename

    def rename(src, dst):
        if ".tmp-" in os.fspath(src):
            return fail(src, dst, real)
        return real(src, dst)

    return rename


def _crash_between_renames(path, step):
    """Child process: the save dies (no handler runs) right after the previous checkpoint was moved aside."""
    os.rename = rename_failing_at_swap(lambda src, dst, real: os._exit(17))
    SafetensorsCheckpointIO().save_checkpoint(sample_checkpoint(step), path)
    os._exit(0)


def test_crash_between_the_renames_leaves_the_checkpoint_readable(tmp_path):
    io = SafetensorsCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(sample_checkpoint(1), last)
    child = multiprocessing.get_context("fork").Process(target=_crash_between_renames, args=(last, 2))
    child.start()
    child.join()
    assert child.exitcode == 17, "the child died between the renames"
    assert names(tmp_path) == [".last.ckpt.old", ".last.ckpt.tmp"], "on disk: last.ckpt is gone, moved aside"
    assert io.load_checkpoint(last)["global_step"] == 1, "the reader restores the previous checkpoint"
    assert names(tmp_path) == [".last.ckpt.tmp", "last.ckpt"], "a reader never deletes (the .tmp may be live)"
    io.save_checkpoint(sample_checkpoint(3), last)
    assert names(tmp_path) == ["last.ckpt"] and io.load_checkpoint(last)["global_step"] == 3, "the writer cleans"


def test_exception_between_the_renames_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(sample_checkpoint(1), tmp_path / "last.ckpt")

    def interrupted(src, dst, real):
        raise KeyboardInterrupt("interrupted between the renames")

    monkeypatch.setattr(os, "rename", rename_failing_at_swap(interrupted))
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(sample_checkpoint(2), tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert names(tmp_path) == ["last.ckpt"] and io.load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 1


def test_a_reader_restoring_during_a_live_swap_does_not_break_the_write(tmp_path, monkeypatch):
    io = SafetensorsCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(sample_checkpoint(1), last)

    readers = []

    def reader_first(src, dst, real):  # once, a reader's load runs in the writer's window between its renames
        if not readers:
            readers.append(recover_directory(last))
            assert last.exists(), "the reader put the previous version back"
        return real(src, dst)  # fails the first time (the target is back): the writer moves it aside again

    monkeypatch.setattr(os, "rename", rename_failing_at_swap(reader_first))
    io.save_checkpoint(sample_checkpoint(2), last)
    monkeypatch.undo()
    assert readers == [last]
    assert names(tmp_path) == ["last.ckpt"] and io.load_checkpoint(last)["global_step"] == 2


def test_readers_that_cannot_restore_read_the_previous_version_and_never_guess(tmp_path, monkeypatch):
    io = SafetensorsCheckpointIO()
    io.save_checkpoint(sample_checkpoint(1), tmp_path / ".last.ckpt.old-0123abcd")  # the state a crash leaves

    def read_only(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", read_only)
    assert io.load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 1
    monkeypatch.undo()
    assert not (tmp_path / "last.ckpt").exists()
    io.save_checkpoint(sample_checkpoint(2), tmp_path / ".last.ckpt.old-4567cdef")
    with pytest.raises(FileNotFoundError, match=r"last.ckpt is missing and 2 earlier versions .*old-0123abcd, "
                                                r"\.last\.ckpt\.old-4567cdef.*rename the complete one to last.ckpt"):
        io.load_checkpoint(tmp_path / "last.ckpt")


def test_load_pretrained_restores_a_model_directory_left_aside(tiny, tmp_path):
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    save_trainable(vlm, tmp_path / ".model.old-89abcdef")  # a save of tmp_path / "model" killed between renames
    loaded = load_pretrained(tmp_path / "model")
    assert names(tmp_path) == ["model"]
    for key, value in vlm.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
