"""The batch contract (``mmpeft.types.Batch``): what the collator and loader produce is what the docs, the runtime
checks and the consumers (model, module, guards) expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import MIXED_ROWS, build_vlm, make_batch
from shard_damage import image_sample, text_sample, write_dir

from mmpeft.adapters import AdapterSpec
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator, select_rows
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.pipeline import SampleProcessor, ShardRows, SkipCounts
from mmpeft.guards import KLToBase, Replay
from mmpeft.module import VLMModule
from mmpeft.types import IGNORE_INDEX, Batch, check_batch

DOCS = Path(__file__).resolve().parents[1] / "docs" / "batch.md"
METADATA = {"id", "source", "eval"}
POSITION = {"epoch", "index"}


def _rows():
    return [
        {"input_ids": torch.tensor([1, 9, 9, 5, 6]), "labels": torch.tensor([IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX,
                                                                              5, 6]),
         "pixel_values": torch.zeros(1, 3, 4, 4), "id": "a", "source": "img", "eval": {"answers": ["x"]}},
        {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([IGNORE_INDEX, 7]), "pixel_values": None,
         "id": "b", "source": "txt"},
        {"input_ids": torch.tensor([1, 9, 9, 9, 9, 8]), "labels": torch.tensor([IGNORE_INDEX] * 5 + [8]),
         "pixel_values": torch.ones(2, 3, 4, 4), "id": "c", "source": "img"},
    ]


def test_collator_output_is_a_batch_with_the_documented_shapes():
    batch = Collator(pad_token_id=0)(_rows())
    check_batch(batch)
    assert set(batch) == Batch.__required_keys__ | METADATA, "the collator makes every key but the data position"
    b, t = 3, 6
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (b, t) and batch[key].dtype == torch.long, key
    assert batch["pixel_values"].shape == (3, 3, 4, 4), "N_img = num_images.sum(), in reading order"
    assert torch.equal(batch["pixel_values"][1:], torch.ones(2, 3, 4, 4))
    assert batch["has_image"].dtype == torch.bool and batch["has_image"].tolist() == [True, False, True]
    assert batch["num_images"].tolist() == [1, 0, 2] and int(batch["num_images"].sum()) == 3
    assert batch["id"] == ["a", "b", "c"] and batch["eval"][0] == {"answers": ["x"]} and batch["eval"][1] == {}
    sub = select_rows(batch, torch.tensor([False, True, True]))
    check_batch(sub)
    assert sub["id"] == ["b", "c"] and torch.equal(sub["pixel_values"], torch.ones(2, 3, 4, 4))


def test_the_docs_describe_every_key():
    text = DOCS.read_text(encoding="utf-8").split("\n## ")[0]  # the table before the first section
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert documented == set(Batch.__annotations__), "docs/batch.md's table lists exactly the Batch keys"
    assert Batch.__required_keys__ | Batch.__optional_keys__ == METADATA | POSITION | Batch.__required_keys__


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b.pop("has_image"), r"missing key\(s\) \['has_image'\]"),
    (lambda b: b.update(attention_mask=b["attention_mask"][:, :-1]),
     r"'attention_mask' must be an integer or bool tensor of input_ids' shape \[3, 6\], got int64 tensor of shape "
     r"\[3, 5\]"),
    (lambda b: b.update(labels=b["labels"].float()), "'labels' must be an integer tensor"),
    (lambda b: b.update(input_ids=b["input_ids"][0]), r"'input_ids' must be a \[B, T\] integer tensor, got int64 "
                                                       r"tensor of shape \[6\]"),
    (lambda b: b.update(pixel_values=b["pixel_values"][0]), r"'pixel_values' must be a \[N_img, C, H, W\]"),
    (lambda b: b.update(has_image=b["num_images"]), r"'has_image' must be a \[B\] = \[3\] bool tensor"),
    (lambda b: b.update(num_images=b["num_images"][:2]), r"'num_images' must be a \[B\] = \[3\] integer"),
    (lambda b: b.update(id=b["id"][:2]), "'id' must be a list of B = 3 entries, got a list of 2"),
    (lambda b: b.update(epoch=torch.tensor(1)), "'epoch' must be an int"),
])
def test_a_broken_batch_is_refused_naming_the_key(change, message):
    batch = Collator(pad_token_id=0)(_rows())
    change(batch)
    with pytest.raises(ValueError, match=message):
        check_batch(batch)


def test_the_model_and_the_training_step_check_what_enters(tiny):
    vlm = build_vlm(tiny)
    batch = make_batch(vlm, MIXED_ROWS)
    with pytest.raises(ValueError, match=r"'attention_mask' must be an integer or bool tensor of input_ids' shape"):
        vlm(**{**batch, "attention_mask": batch["attention_mask"][:, 1:]})
    with pytest.raises(ValueError, match="'labels' must be an integer tensor"):
        vlm(**{**batch, "labels": batch["labels"].float()})
    module = VLMModule(vlm)
    with pytest.raises(ValueError, match=r"batch is missing key\(s\) \['has_image', 'num_images'\]"):
        module.training_step(batch, 0)


def test_loader_batches_satisfy_the_contract_and_train(tiny, tmp_path):
    """Shards -> render -> mix -> collate -> loader: every batch is a Batch with its data position, and the module
    and its guards consume it as it comes."""
    vlm = build_vlm(tiny, llm_spec=AdapterSpec("lora", init_weights=False))
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens)
    processor = SampleProcessor(renderer, vlm.vision.image_transform)
    skips = SkipCounts()
    images = ShardRows(write_dir(tmp_path / "img", 6, 3), processor, skips, shuffle=False)
    texts = ShardRows(write_dir(tmp_path / "txt", 6, 3, text_sample), processor, skips, shuffle=False)
    loader = VLLoader(VLStream(images, texts, 0.5, 4, Collator(vlm.llm.tokenizer.pad_token_id)), skips)
    batches = list(loader)
    assert [b["index"] for b in batches] == list(range(len(batches))) and {b["epoch"] for b in batches} == {0}
    module = VLMModule(vlm, guards=[Replay(), KLToBase()])
    for batch in batches:
        check_batch(batch)
        assert set(batch) == set(Batch.__annotations__), "a training batch carries every key"
    mixed = next(b for b in batches if b["has_image"].any() and not b["has_image"].all())
    losses = module._losses(mixed)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["replay"] > 0 and losses["task"] > 0
    assert image_sample(0).record["id"] in {i for b in batches for i in b["id"]}
