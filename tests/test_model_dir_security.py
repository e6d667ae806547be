"""A model directory is data: crafted init_args, damaged files, bad schemas and moved bases fail clearly, before
any weight is read from a place the file chose."""

import inspect
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import MIXED_ROWS, make_batch

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import TINY_TIMM_VIT_KWARGS, save_tiny_llm
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.model_config import read_model_config
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.timm_tower import TimmVisionTower
from mmpeft.towers.vision import OpenClipVisionTower
from mmpeft.vlm import VisionLanguageModel

CONFIG = "mmpeft_config.json"


class Payload:
    """Unpickling this creates ``target``: a stand-in for code a pickle runs."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def _payload(path: Path, target: Path) -> Path:
    torch.save({"state_dict": Payload(target)}, path)
    return path


def _towers(tiny, root: Path, vision: str = "timm"):
    """Private copies of the tiny bases (tests move or replace them) and a VLM on them with trained adapters."""
    llm = shutil.copytree(tiny.llm, root / "llm")
    if vision == "timm":
        weights = shutil.copy(tiny.timm_vit, root / "vit.safetensors")
        tower = TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(weights), image_size=32,
                                model_kwargs=TINY_TIMM_VIT_KWARGS)
    else:
        clip_dir = shutil.copytree(tiny.open_clip.removeprefix("local-dir:"), root / "open_clip")
        tower = OpenClipVisionTower(f"local-dir:{clip_dir}")
    torch.manual_seed(0)
    return VisionLanguageModel(tower, LLMTower(str(llm)), vision_adapter=AdapterSpec("lora", init_weights=False),
                               llm_adapter=AdapterSpec("lora", init_weights=False))


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("timm_ckpt")
    save_trainable(_towers(tiny, root), root / "ckpt")
    return root / "ckpt"


def _edited(directory: Path, tmp_path: Path, edit) -> Path:
    crafted = shutil.copytree(directory, tmp_path / "crafted")
    config = json.loads((crafted / CONFIG).read_text())
    edit(config)
    (crafted / CONFIG).write_text(json.dumps(config))
    return crafted


def _vision_args(config):
    return config["vlm"]["vision"]["init_args"]


# ---------------------------------------------------------------- weight sources chosen by the file


def test_payload_really_runs_when_unpickled(tmp_path):
    """The payload the tests below use would create its target: their 'no file created' means something."""
    target = tmp_path / "pwned"
    torch.load(_payload(tmp_path / "p.pth", target), weights_only=False)
    assert target.exists()


ROUTES = {  # model_kwargs entries through which timm.create_model would read the payload (key reported)
    "checkpoint_path": (lambda p: {"checkpoint_path": str(p)}, "model_kwargs.checkpoint_path"),
    "overlay_file": (lambda p: {"pretrained_cfg_overlay": {"file": str(p)}}, "model_kwargs.pretrained_cfg_overlay"),
    "pretrained_cfg": (lambda p: {"pretrained_cfg": {"file": str(p), "hf_hub_id": None}},
                       "model_kwargs.pretrained_cfg"),
    "cache_dir": (lambda p: {"cache_dir": str(p.parent)}, "model_kwargs.cache_dir"),
    "pretrained": (lambda p: {"pretrained": True}, "model_kwargs.pretrained"),
    "any_path_value": (lambda p: {"backbone": str(p)}, "model_kwargs.backbone"),
    "hub_value": (lambda p: {"backbone": "hf-hub:someone/model"}, "model_kwargs.backbone"),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_timm_model_kwargs_cannot_redirect_weights(saved, tmp_path, route):
    target = tmp_path / "pwned"
    payload = _payload(tmp_path / "weights.pth", target)
    make, key = ROUTES[route]

    def edit(config):
        _vision_args(config)["model_kwargs"] = {**TINY_TIMM_VIT_KWARGS, **make(payload)}
        _vision_args(config)["pretrained"] = True  # what makes timm read pretrained_cfg's file
    crafted = _edited(saved, tmp_path, edit)
    full_key = f"vlm.vision.init_args.{key}"
    with pytest.raises(ValueError) as info:
        load_pretrained(crafted)
    message = str(info.value)
    assert f"{crafted / CONFIG}: key {full_key}" in message
    assert f"allow_init_args=['{full_key}']" in message and f"--allow-init-arg {full_key}" in message
    with pytest.raises(ValueError, match=re.escape(full_key)):
        cli_main(["export", str(crafted), str(tmp_path / "export")])
    assert not target.exists() and not (tmp_path / "export").exists()


def test_allowed_redirect_still_never_unpickles(saved, tmp_path):
    """With the key allowed, timm reads the file itself: timm >= 1.0.26 (the floor) refuses to unpickle it."""
    target = tmp_path / "pwned"
    payload = _payload(tmp_path / "weights.pth", target)
    crafted = _edited(saved, tmp_path, lambda c: _vision_args(c).__setitem__(
        "model_kwargs", {**TINY_TIMM_VIT_KWARGS, "checkpoint_path": str(payload)}))
    with pytest.raises(RuntimeError, match="weights_only"):
        load_pretrained(crafted, allow_init_args=["vlm.vision.init_args.model_kwargs.checkpoint_path"])
    assert not target.exists()


def test_timm_floor_reads_weights_only():
    from timm.models import load_checkpoint, load_state_dict

    for loader in (load_checkpoint, load_state_dict):
        assert inspect.signature(loader).parameters["weights_only"].default is True
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    floors = dict(re.findall(r'"(timm|scipy)>=([\d.]+)"', pyproject))
    assert tuple(map(int, floors["timm"].split("."))) >= (1, 0, 26), "timm < 1.0.26 unpickles with weights_only=False"
    assert tuple(map(int, floors["scipy"].split("."))) >= (1, 15), "scipy.stats.bootstrap's rng= needs scipy 1.15"


@pytest.mark.parametrize(("section", "field", "value"), [
    ("vision_cfg", "timm_model_name", "hf-hub:someone/model"),
    ("vision_cfg", "timm_model_pretrained", True),
    ("text_cfg", "hf_model_name", "someone/text-model"),
])
def test_open_clip_local_dir_config_cannot_fetch_other_models(tiny, tmp_path, section, field, value):
    save_trainable(_towers(tiny, tmp_path, vision="open_clip"), tmp_path / "ckpt")
    clip_config = tmp_path / "open_clip" / "open_clip_config.json"
    data = json.loads(clip_config.read_text())
    data["model_cfg"][section][field] = value
    clip_config.write_text(json.dumps(data))
    allow = f"vlm.vision.open_clip_config.{section}.{field}"
    with pytest.raises(ValueError) as info:
        load_pretrained(tmp_path / "ckpt")
    message = str(info.value)
    assert f"{clip_config}: key model_cfg.{section}.{field}" in message and str(tmp_path / "ckpt" / CONFIG) in message
    assert f"--allow-init-arg {allow}" in message


# ---------------------------------------------------------------- the config's schema, checked before building


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c.__setitem__("base_fingerprints", []), r"key base_fingerprints must be an object"),
    (lambda c: c.__setitem__("base_fingerprints", {"vision": "x"}), r"key base_fingerprints.vision must be an obj"),
    (lambda c: c["base_fingerprints"].__setitem__("gpu", {}), r"key base_fingerprints has unknown towers \['gpu'\]"),
    (lambda c: c["base_fingerprints"]["llm"].__setitem__("weights", 3), r"base_fingerprints.llm.weights = 3 has the"),
    (lambda c: c["base_fingerprints"]["llm"].pop("config"), r"base_fingerprints.llm: .*missing fields \['config'\]"),
    (lambda c: c.__setitem__("extra", ["step", 3]), r"key extra must be an object"),
    (lambda c: c.__setitem__("vlm", []), r"key vlm must be an object"),
    (lambda c: c["input_format"].__setitem__("max_length", "2048"), r"key input_format.max_length = '2048'"),
])
def test_schema_errors_come_before_any_tower_is_built(saved, tmp_path, monkeypatch, edit, expected):
    crafted = _edited(saved, tmp_path, edit)

    def build(*args, **kwargs):
        raise AssertionError("a tower was built before the config was checked")
    monkeypatch.setattr(VisionLanguageModel, "from_config", build)
    with pytest.raises(ValueError, match=expected) as info:
        load_pretrained(crafted)
    assert str(crafted / CONFIG) in str(info.value)
    with pytest.raises(ValueError, match=expected):
        read_model_config(crafted)  # what stage-2 initialisation (model.init_from) reads


@pytest.mark.parametrize("missing", [["vision"], ["llm"], ["vision", "llm"]])
def test_missing_fingerprint_warns_like_a_missing_key(saved, tmp_path, caplog, missing):
    crafted = _edited(saved, tmp_path, lambda c: [c["base_fingerprints"].pop(t) for t in missing])
    with caplog.at_level(logging.WARNING, logger="mmpeft.fingerprint"):
        load_pretrained(crafted)
    for tower in ("vision", "llm"):
        assert (f"has no base_fingerprints.{tower}: the frozen {tower} base cannot be checked" in caplog.text) \
            == (tower in missing)


# ---------------------------------------------------------------- loading errors name the file, key and fix


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: _vision_args(c).__setitem__("feature_layer", "x"),
     r"key vlm.vision.init_args.feature_layer = 'x' has the wrong type .*expected int \| None \| list"),
    (lambda c: c["vlm"]["llm"]["init_args"].__setitem__("random_weights", "no"),
     r"key vlm.llm.init_args.random_weights = 'no' has the wrong type"),
    (lambda c: c["vlm"]["projector"]["init_args"].__setitem__("num_layers", 2.5),
     r"key vlm.projector.init_args.num_layers = 2.5 has the wrong type"),
    (lambda c: _vision_args(c)["model_kwargs"].__setitem__("depth", "two"),
     r"key vlm.vision.init_args: mmpeft.towers.timm_tower.TimmVisionTower refused them"),
    (lambda c: c["vlm"]["llm"]["init_args"].__setitem__("name", "nobody/uncached-model"),  # offline, not cached
     r"key vlm.llm.init_args: Could not load the LLM 'nobody/uncached-model'"),
])
def test_badly_typed_init_args_name_the_key(saved, tmp_path, edit, expected):
    crafted = _edited(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=expected) as info:
        load_pretrained(crafted)
    assert str(crafted / CONFIG) in str(info.value)


@pytest.mark.parametrize("file", ["trainable.safetensors", "llm_adapter/adapter_model.safetensors",
                                  "vision_adapter/adapter_model.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_weight_files_are_named(saved, tmp_path, file, keep):
    crafted = shutil.copytree(saved, tmp_path / "crafted")
    data = (crafted / file).read_bytes()
    (crafted / file).write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match=rf"{re.escape(str(crafted / file))} \(.*\) is damaged.*copy the model dir"):
        load_pretrained(crafted)


def test_truncated_export_and_tower_files_are_named(tiny, tmp_path):
    vlm = _towers(tiny, tmp_path)
    export(vlm, tmp_path / "export")
    vision_file = tmp_path / "export" / "vision_tower.safetensors"
    whole = vision_file.read_bytes()
    vision_file.write_bytes(whole[:100])
    with pytest.raises(ValueError, match=rf"{re.escape(str(vision_file))} \(weights_file of TimmVisionTower.*damaged"):
        load_pretrained(tmp_path / "export")
    vision_file.write_bytes(whole)  # the vision file whole again; now the LLM's is cut short
    llm_file = tmp_path / "export" / "llm" / "model.safetensors"
    llm_file.write_bytes(llm_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"export/mmpeft_config.json: key vlm.llm.init_args: A weights file of the "
                                         r"LLM .*export/llm' is damaged"):
        load_pretrained(tmp_path / "export")
    weights = tmp_path / "vit.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"checkpoint_path {re.escape(str(weights))} cannot be read as weights"):
        TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(weights), model_kwargs=TINY_TIMM_VIT_KWARGS)


@pytest.mark.parametrize("vision", ["timm", "open_clip"])
def test_moved_bases_fail_clearly_and_load_from_their_new_place(tiny, tmp_path, vision):
    vlm = _towers(tiny, tmp_path / "old", vision)
    batch = make_batch(vlm, MIXED_ROWS)
    with torch.no_grad():
        ref = vlm(**batch, return_logits=True).logits
    save_trainable(vlm, tmp_path / "ckpt")
    shutil.move(tmp_path / "old", tmp_path / "new")  # the bases moved (or the checkpoint went to another machine)
    config = tmp_path / "ckpt" / CONFIG
    with pytest.raises(ValueError, match=rf"{re.escape(str(config))}: key vlm.llm.init_args.name = .*old/llm.* does "
                                         r"not exist on this machine.*llm_path=.*--llm-path"):
        load_pretrained(tmp_path / "ckpt")
    new = tmp_path / "new"
    vision_path = new / ("vit.safetensors" if vision == "timm" else "open_clip")
    vision_key = "checkpoint_path" if vision == "timm" else "name"
    with pytest.raises(ValueError, match=rf"key vlm.vision.init_args.{vision_key} = .*--vision-path"):
        load_pretrained(tmp_path / "ckpt", llm_path=str(new / "llm"))
    moved = load_pretrained(tmp_path / "ckpt", llm_path=str(new / "llm"), vision_path=str(vision_path))
    with torch.no_grad():
        assert torch.equal(moved(**batch, return_logits=True).logits, ref)
    cli_main(["export", str(tmp_path / "ckpt"), str(tmp_path / "export"), "--llm-path", str(new / "llm"),
              "--vision-path", str(vision_path)])
    assert (tmp_path / "export" / "llm" / "config.json").is_file()
    save_tiny_llm(tmp_path / "other_llm", seed=1)  # a different base at the new path: the fingerprint refuses it
    with pytest.raises(ValueError, match=r"llm \(.*other_llm\): weights: saved sha256"):
        load_pretrained(tmp_path / "ckpt", llm_path=str(tmp_path / "other_llm"), vision_path=str(vision_path))


# ---------------------------------------------------------------- TimmVisionTower's own file


def test_timm_tower_moved_file_keeps_old_names(saved, tmp_path):
    from mmpeft.towers import TimmVisionTower as from_package

    assert from_package is TimmVisionTower
    saved_path = json.loads((saved / CONFIG).read_text())["vlm"]["vision"]["class_path"]
    assert saved_path == "mmpeft.towers.timm_tower.TimmVisionTower"
    old = _edited(saved, tmp_path, lambda c: c["vlm"]["vision"].__setitem__(
        "class_path", "mmpeft.towers.vision.TimmVisionTower"))  # a directory written before the move
    assert type(load_pretrained(old).vision) is TimmVisionTower
    for path in (Path(__file__).parents[1] / "mmpeft" / "towers").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, f"{path} is over 400 lines"


def test_builtin_classes_are_mmpeft_subclasses_of_the_role_and_nothing_else():
    """A projector added to mmpeft/projectors.py is loadable with no registration; one defined outside the package
    (here, in a test module) is not, until the user allows it."""
    import mmpeft.projectors as projectors_module
    from mmpeft.allowed_classes import builtin_classes
    from mmpeft.projectors import Projector

    class OutsideProjector(Projector):  # defined outside the mmpeft package
        pass

    in_file = {c for _, c in inspect.getmembers(projectors_module, inspect.isclass)
               if issubclass(c, Projector) and c is not Projector and c.__module__ == projectors_module.__name__}
    assert set(builtin_classes("projector")) == in_file
    assert OutsideProjector not in builtin_classes("projector")
    assert {c.__name__ for c in builtin_classes("vision")} == {"OpenClipVisionTower", "TimmVisionTower"}
    assert builtin_classes("llm") == (LLMTower,)
    assert builtin_classes("vision_adapter") == ()
