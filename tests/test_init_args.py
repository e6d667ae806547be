"""``init_args`` come from the constructor call (``mmpeft.init_args.records_init_args``), and the saved config of
every tower and projector is what it was when each class listed its arguments by hand."""

import inspect
import json
import os
from functools import partial

import pytest
import torch
from conftest import build_vlm

from mmpeft.apps.tiny import TINY_TIMM_VIT_KWARGS
from mmpeft.checkpoint import load_pretrained, save_trainable
from mmpeft.init_args import records_init_args
from mmpeft.projectors import LinearProjector, MLPProjector, PerceiverResampler, PooledMLPProjector
from mmpeft.towers import OpenClipVisionTower, TimmVisionTower
from mmpeft.towers.llm import LLMTower

MLP_DEFAULTS = {"hidden_dim": None, "num_layers": 2, "input_norm": "none", "input_groups": None}


@pytest.mark.parametrize("build, expected", [
    (lambda: LinearProjector(8, 16), {}),
    (lambda: MLPProjector(8, 16), MLP_DEFAULTS),
    (lambda: MLPProjector(8, 16, hidden_dim=4, num_layers=3, input_norm="layernorm", input_groups=(2, 6)),
     {"hidden_dim": 4, "num_layers": 3, "input_norm": "layernorm", "input_groups": [2, 6]}),
    (lambda: MLPProjector(8, 16, input_groups=[]), MLP_DEFAULTS),
    (lambda: PooledMLPProjector(8, 16, output_grid=2, position_embedding=True),
     {**MLP_DEFAULTS, "output_grid": 2, "position_embedding": True}),
    (lambda: PerceiverResampler(8, 16, num_queries=4, depth=1, num_heads=2),
     {"num_queries": 4, "depth": 1, "width": None, "num_heads": 2}),
])
def test_projector_init_args_are_the_saved_options(build, expected):
    assert build().init_args == expected


def test_tower_init_args_are_what_was_saved_before(tiny, tmp_path, monkeypatch):
    """Relative local paths as a config gives them: saved absolute, everything else as passed or defaulted."""
    monkeypatch.chdir(tiny.llm.parent)
    open_clip = tiny.open_clip.removeprefix("local-dir:")
    llm = LLMTower(os.path.relpath(tiny.llm))
    assert llm.init_args == {"name": str(tiny.llm), "dtype": "float32", "image_token": "<image>",
                             "attn_implementation": "sdpa", "trust_remote_code": False, "revision": None,
                             "random_weights": False, "quantize": None}
    clip = OpenClipVisionTower("local-dir:" + os.path.relpath(open_clip), feature_layer=-2)
    assert clip.init_args == {"name": f"local-dir:{open_clip}", "pretrained": None, "feature_layer": -2,
                              "keep_prefix_tokens": False, "image_size": None, "dtype": "float32",
                              "weights_file": None, "quantize": None}
    vit = TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=os.path.relpath(tiny.timm_vit), image_size=32,
                          model_kwargs=TINY_TIMM_VIT_KWARGS)
    assert vit.init_args == {"name": "vit_tiny_patch16_224", "pretrained": False, "checkpoint_path": str(tiny.timm_vit),
                             "feature_layer": -1, "keep_prefix_tokens": False, "image_size": 32,
                             "model_kwargs": TINY_TIMM_VIT_KWARGS, "dtype": "float32", "weights_file": None,
                             "cache_prefix_blocks": 0, "quantize": None}
    cnn = TimmVisionTower("tf_efficientnet_lite0", checkpoint_path=os.path.relpath(tiny.timm_cnn), image_size=32,
                          feature_layer=[-2, None])
    assert cnn.init_args["checkpoint_path"] == str(tiny.timm_cnn) and cnn.init_args["feature_layer"] == [-2, None]
    assert list(inspect.signature(TimmVisionTower).parameters)[:2] == ["name", "pretrained"], \
        "the decorated constructor keeps its signature (jsonargparse, allowed_classes read it)"


def test_saved_vlm_config_round_trips(tiny, tmp_path):
    vlm = build_vlm(tiny, projector=partial(PooledMLPProjector, output_grid=2))
    save_trainable(vlm, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "mmpeft_config.json").read_text())["vlm"]
    assert saved["projector"] == {"class_path": "mmpeft.projectors.PooledMLPProjector",
                                  "init_args": {**MLP_DEFAULTS, "output_grid": 2, "position_embedding": False}}
    assert saved["llm"]["init_args"]["name"] == str(tiny.llm)
    assert load_pretrained(tmp_path / "ckpt").config() == saved == vlm.config()


def test_outermost_constructor_records_and_normalised_values_reach_it():
    seen = {}

    class Base(torch.nn.Module):
        @records_init_args(exclude=("width",), name=str.upper)
        def __init__(self, width: int, name: str = "a"):
            super().__init__()
            seen["base"] = name

    class Child(Base):
        @records_init_args(exclude=("width",), name=str.upper)
        def __init__(self, width: int, name: str = "b", depth: int = 2):
            super().__init__(width, name=name)

    assert Base(3).init_args == {"name": "A"} and seen["base"] == "A"
    assert Child(3, depth=4).init_args == {"name": "B", "depth": 4}
    with pytest.raises(TypeError, match="does not take"):
        records_init_args(nme=str)(Base.__init__.__wrapped__)
