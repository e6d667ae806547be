import pytest
import torch
from conftest import build_vision

from mmpeft.apps.tiny import TINY_TIMM_VIT_KWARGS
from mmpeft.towers import OpenClipVisionTower, TimmVisionTower
from mmpeft.towers.llm import LLMTower


@pytest.mark.parametrize("family,tokens,dim", [("open_clip", 16, 64), ("timm_vit", 16, 64), ("timm_cnn", 4, 112)])
def test_vision_tower_contract(tiny, family, tokens, dim):
    tower = build_vision(tiny, family)
    assert (tower.num_tokens, tower.embed_dim, tower.image_size) == (tokens, dim, (32, 32))
    assert all(not p.requires_grad for p in tower.parameters()), "towers are frozen on construction"
    out = tower(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, tokens, dim)
    from PIL import Image

    pixels = tower.image_transform(Image.new("RGB", (50, 40), (200, 30, 30)))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32


def test_open_clip_feature_layer_and_prefix(tiny):
    last = OpenClipVisionTower(tiny.open_clip, feature_layer=-1)
    second = OpenClipVisionTower(tiny.open_clip, feature_layer=-2, keep_prefix_tokens=True)
    assert second.num_tokens == 17, "CLS kept in front of 16 patch tokens"
    assert len(second.model.transformer.resblocks) == 1, "blocks after the feature layer are pruned"
    x = torch.randn(1, 3, 32, 32)
    assert not torch.equal(last(x), second(x)[:, 1:])


def test_open_clip_weights_file_loads_without_a_random_weights_warning(tiny, tmp_path, caplog):
    """An export's tower is an open_clip config without weights plus ``weights_file``: open_clip's warnings that
    the model has no weights would be false there, so they are dropped (and only there)."""
    import logging
    import shutil
    from pathlib import Path

    from safetensors.torch import save_file

    source = OpenClipVisionTower(tiny.open_clip, feature_layer=-2)
    config_only = tmp_path / "vision_config"
    config_only.mkdir()
    shutil.copy(Path(tiny.open_clip.removeprefix("local-dir:")) / "open_clip_config.json", config_only)
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, tmp_path / "vision.safetensors")
    with caplog.at_level(logging.INFO):
        loaded = OpenClipVisionTower(f"local-dir:{config_only}", feature_layer=-2,
                                     weights_file=str(tmp_path / "vision.safetensors"))
    assert not [r for r in caplog.records if "no CLIP weights" in r.getMessage()
                or "initialized randomly" in r.getMessage()]
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), source(x))
    with caplog.at_level(logging.WARNING):  # without weights_file the warning is true, and kept
        OpenClipVisionTower(f"local-dir:{config_only}", feature_layer=-2)
    assert any("no CLIP weights" in r.getMessage() for r in caplog.records)


def test_timm_vit_feature_layer_matches_forward_intermediates(tiny):
    import timm
    from safetensors.torch import load_file

    tower = TimmVisionTower("vit_tiny_patch16_224", checkpoint_path=str(tiny.timm_vit), image_size=32,
                            model_kwargs=TINY_TIMM_VIT_KWARGS, feature_layer=-2, keep_prefix_tokens=True)
    ref = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, **TINY_TIMM_VIT_KWARGS)
    ref.load_state_dict(load_file(tiny.timm_vit))
    x = torch.randn(2, 3, 32, 32)
    spatial, prefix = ref.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True,
                                                return_prefix_tokens=True)[0]
    torch.testing.assert_close(tower(x), torch.cat([prefix, spatial], 1), rtol=0, atol=0)


def test_cnn_final_features_flattened_row_major(tiny):
    tower = TimmVisionTower("tf_efficientnet_lite0", checkpoint_path=str(tiny.timm_cnn), image_size=64,
                            feature_layer=None)
    assert (tower.num_tokens, tower.embed_dim) == (4, 1280)  # 64/32 = 2x2 map of the 1280-channel head conv
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fmap = tower.model.forward_features(x)  # [1, 1280, 2, 2]
    torch.testing.assert_close(tower(x)[0, 1], fmap[0, :, 0, 1])


def test_batchnorm_statistics_stay_frozen_in_train_mode(tiny):
    tower = build_vision(tiny, "timm_cnn").train()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    tower(torch.randn(4, 3, 32, 32) * 3)
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())


def test_unknown_model_names_list_choices(tiny):
    with pytest.raises(ValueError, match="Unknown open_clip model 'ViT-L-14-337'.*ViT-L-14-336"):
        OpenClipVisionTower("ViT-L-14-337")
    with pytest.raises(ValueError, match="Unknown timm model 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224"):
        TimmVisionTower("vit_tiny_patch16_2244")
    with pytest.raises(OSError, match="Could not load the LLM"):
        LLMTower(str(tiny.llm) + "_missing")


def test_wrong_image_size_or_dtype_is_a_clear_error(tiny):
    tower = build_vision(tiny, "timm_vit")
    expected = r"expects pixel_values \[B, 3, 32, 32\], got \(2, 3, 64, 64\).*image_transform"
    with pytest.raises(ValueError, match=expected):
        tower(torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="uint8"):
        tower(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_llm_tower_adds_image_token_only_when_missing(tiny):
    with_token = LLMTower(str(tiny.llm))
    assert not with_token.added_image_token
    without = LLMTower(str(tiny.llm_without_image_token))
    assert without.added_image_token
    rows = without.model.get_input_embeddings().num_embeddings
    assert rows == len(without.tokenizer) and without.image_token_id == rows - 1
    assert all(not p.requires_grad for p in without.parameters())
    assert with_token.tokenizer("a <image> b")["input_ids"].count(with_token.image_token_id) == 1
    assert without.tokenizer("a <image> b")["input_ids"].count(without.image_token_id) == 1


def test_llm_tower_dtype(tiny):
    tower = LLMTower(str(tiny.llm), dtype="bfloat16")
    assert tower.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'bf32'"):
        LLMTower(str(tiny.llm), dtype="bf32")


@pytest.mark.parametrize("family", ["timm_cnn", "timm_vit"])
def test_prefix_cache_equals_the_uncached_forward(tiny, family):
    """Cached-prefix features (an early layer inside the prefix, one after it, the final features) equal the
    uncached tower's on a miss and on a hit, and hits skip the prefix."""
    if family == "timm_cnn":
        kwargs = dict(name="tf_efficientnet_lite0", checkpoint_path=str(tiny.timm_cnn), image_size=64,
                      feature_layer=[1, -2, None])
        blocks = 5  # stage_ends: layer 1 ends inside the prefix, layer -2 (index 3) after it
    else:
        kwargs = dict(name="vit_tiny_patch16_224", checkpoint_path=str(tiny.timm_vit), image_size=32,
                      model_kwargs=TINY_TIMM_VIT_KWARGS, feature_layer=[0, 1])
        blocks = 1
    plain = TimmVisionTower(**kwargs)
    cached = TimmVisionTower(**kwargs, cache_prefix_blocks=blocks)
    x = torch.randn(3, 3, *plain.image_size, generator=torch.Generator().manual_seed(0))
    before = cached.prefix_cache.stats()  # construction probes the token shape once
    with torch.no_grad():
        expected = plain(x)
        miss = cached(x)
        hit = cached(x[[2, 0]])
    torch.testing.assert_close(miss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hit, expected[[2, 0]], rtol=1e-5, atol=1e-5)
    after = cached.prefix_cache.stats()
    assert {k: after[k] - before[k] for k in after} == {"entries": 3, "hits": 2, "misses": 3}
