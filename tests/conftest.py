"""Tiny random towers, saved once per session and loaded through the real local-dir paths.

Every test builds fresh tower objects from these directories (adapters mutate towers in place).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import importlib  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mmpeft.adapters import AdapterSpec  # noqa: E402
from mmpeft.apps.tiny import (  # noqa: E402
    TINY_TIMM_VIT_KWARGS,
    save_tiny_llm,
    save_tiny_open_clip,
    save_tiny_timm_cnn,
    save_tiny_timm_vit,
)
from mmpeft.towers import OpenClipVisionTower, TimmVisionTower  # noqa: E402
from mmpeft.towers.llm import LLMTower  # noqa: E402
from mmpeft.types import IGNORE_INDEX  # noqa: E402
from mmpeft.vlm import VisionLanguageModel  # noqa: E402

# two cores: one thread per xdist worker (make test runs two), both threads for a single process
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def benchmark_script(monkeypatch):
    """``benchmark_script("name")``: ``benchmarks/name.py`` imported afresh, its folder on ``sys.path`` for this
    test (the scripts import each other from beside them, e.g. train_throughput from profile_compare)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


@dataclass
class TinyDirs:
    llm: Path
    llm_without_image_token: Path
    open_clip: str
    timm_vit: Path
    timm_cnn: Path


@pytest.fixture(scope="session", autouse=True)
def private_mmpeft_cache(tmp_path_factory):
    """Tests never read or write the user's cache (``$MMPEFT_CACHE``, default ~/.cache/mmpeft): zoo names, the
    tiny towers' ``zoo:tiny/...`` included, resolve in a temporary one (``zoo_cache`` sets its own on top)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MMPEFT_CACHE", str(tmp_path_factory.mktemp("mmpeft_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyDirs:
    root = tmp_path_factory.mktemp("tiny_towers")
    return TinyDirs(
        llm=save_tiny_llm(root / "llm"),
        llm_without_image_token=save_tiny_llm(root / "llm_no_image", with_image_token=False),
        open_clip=save_tiny_open_clip(root / "open_clip"),
        timm_vit=save_tiny_timm_vit(root / "timm_vit.safetensors"),
        timm_cnn=save_tiny_timm_cnn(root / "timm_cnn.safetensors"),
    )


def build_vision(tiny: TinyDirs, family: str = "open_clip"):
    if family == "open_clip":
        return OpenClipVisionTower(tiny.open_clip, feature_layer=-1)
    if family == "timm_vit":
        return TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(tiny.timm_vit), image_size=32,
                               model_kwargs=TINY_TIMM_VIT_KWARGS)
    if family == "timm_cnn":
        # stage index 5 of EfficientNet-Lite0 (112 channels); 32x32 input -> 2x2 = 4 tokens
        return TimmVisionTower("tf_efficientnet_lite0", checkpoint_path=str(tiny.timm_cnn), image_size=32,
                               feature_layer=-2)
    raise ValueError(family)


def build_vlm(tiny: TinyDirs, vision: str = "open_clip", vision_spec: AdapterSpec | None = None,
              llm_spec: AdapterSpec | None = None, seed: int = 0, **kwargs) -> VisionLanguageModel:
    torch.manual_seed(seed)  # projector / soft prompt init
    return VisionLanguageModel(build_vision(tiny, vision), LLMTower(str(tiny.llm)), vision_adapter=vision_spec,
                               llm_adapter=llm_spec, **kwargs)


def make_batch(vlm: VisionLanguageModel, rows: list[tuple[int, str, str]], seed: int = 0,
               image_flags: bool = False) -> dict:
    """Rows of (num_images, prompt, answer): ids = BOS + images + prompt + answer + EOS, right-padded.

    Labels supervise the answer and EOS only. Pixels are random, one per image, in reading order.
    ``image_flags``: also the collator's per-row ``has_image`` and ``num_images`` (what the guards read).
    """
    tok = vlm.llm.tokenizer
    m = vlm.num_image_tokens
    ids, labels = [], []
    for n_img, prompt, answer in rows:
        images = [vlm.llm.image_token_id] * (m * n_img)
        prefix = [tok.bos_token_id] + images + tok(prompt, add_special_tokens=False)["input_ids"]
        target = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(prefix + target)
        labels.append([IGNORE_INDEX] * len(prefix) + target)
    length = max(map(len, ids))
    pad = tok.pad_token_id
    batch = {
        "input_ids": torch.tensor([r + [pad] * (length - len(r)) for r in ids]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in ids]),
        "labels": torch.tensor([r + [IGNORE_INDEX] * (length - len(r)) for r in labels]),
    }
    n_images = sum(r[0] for r in rows)
    g = torch.Generator().manual_seed(seed)
    size = vlm.vision.image_size
    batch["pixel_values"] = torch.randn(n_images, 3, *size, generator=g) if n_images else None
    if image_flags:
        batch["has_image"] = torch.tensor([n > 0 for n, _, _ in rows])
        batch["num_images"] = torch.tensor([n for n, _, _ in rows])
    return batch


MIXED_ROWS = [
    (1, " what color is the circle?", " red"),
    (0, " The capital of France is", " Paris."),
    (2, " how many objects are there?", " two"),
]


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """One conversion per test session (about 20 s), in a private cache."""
    path = tmp_path_factory.mktemp("zoo")
    mp = pytest.MonkeyPatch()
    mp.setenv("MMPEFT_CACHE", str(path))
    yield path
    mp.undo()


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first (a stable sort): ``make test`` gives each of its two xdist workers whole files in
    collection order, so the 3-minute end-to-end demo starts at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
