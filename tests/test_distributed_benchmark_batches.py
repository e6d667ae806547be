"""``benchmarks/distributed_throughput.py``'s synthetic batches (issue 19's mixed, variable-length rows) keep the
``mmpeft.types.Batch`` contract: text-only rows carry no image, ``pixel_values`` holds one image per image row, every
real text token is supervised, and lengths vary. The throughput itself is measured by the script, not here."""

import itertools

import pytest
import torch

from mmpeft.types import IGNORE_INDEX, check_batch


@pytest.fixture
def script(benchmark_script):
    return benchmark_script("distributed_throughput")  # which imports train_throughput beside it


def test_mixed_variable_batches_keep_the_batch_contract(script):
    image_tokens, image_id = 9, 6
    data = script.SyntheticBatches(batch=16, text_len=32, num_image_tokens=image_tokens, image_token_id=image_id,
                                   vocab_low=7, vocab_high=100, image_size=(8, 8), seed=0, lengths="variable",
                                   sigma=0.5, text_only_ratio=0.25)
    batches = list(itertools.islice(iter(data), 20))
    text_only = 0
    lengths = set()
    for batch in batches:
        check_batch(batch)
        ids, mask, labels, has_image = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["has_image"]
        n_images = int(has_image.sum())
        assert (batch["pixel_values"] is None) == (n_images == 0)
        if n_images:
            assert batch["pixel_values"].shape == (n_images, 3, 8, 8)
        assert torch.equal(batch["num_images"], has_image.long())
        for row in range(16):
            placeholders = int((ids[row] == image_id).sum())
            assert placeholders == (image_tokens if has_image[row] else 0)
            real = int(mask[row].sum())
            text = real - placeholders
            lengths.add(text)
            # every real text token is a label, nothing else is
            assert int((labels[row] != IGNORE_INDEX).sum()) == text
            assert bool(mask[row, :real].all()) and not bool(mask[row, real:].any()), "right-padded"
        text_only += int((~has_image).sum())
    assert 0.15 < text_only / (20 * 16) < 0.35, "about a quarter of the rows are text-only"
    assert len(lengths) > 10 and min(lengths) >= 16, "lognormal lengths, clamped at 16"


def test_fixed_image_only_batches_as_before(script):
    data = script.SyntheticBatches(batch=4, text_len=20, num_image_tokens=5, image_token_id=6, vocab_low=7,
                                   vocab_high=50, image_size=(8, 8), seed=0)
    batch = next(iter(data))
    check_batch(batch)
    assert batch["input_ids"].shape == (4, 25) and bool(batch["attention_mask"].all())
    assert bool(batch["has_image"].all()) and batch["pixel_values"].shape == (4, 3, 8, 8)
