"""The collator's padding (torch's pad_sequence) gives the batch right-padding defines: ids padded with the pad id,
labels with IGNORE_INDEX, a mask of the real tokens, to the longest row or the next multiple."""

import pytest
import torch

from mmpeft.data.collate import Collator
from mmpeft.types import IGNORE_INDEX


def rows_of(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate(lengths):
        ids = torch.randint(3, 100, (n,), generator=generator)
        labels = ids.clone()
        labels[: n // 2] = IGNORE_INDEX
        rows.append({"input_ids": ids, "labels": labels, "pixel_values": None, "id": f"r{i}"})
    return rows


@pytest.mark.parametrize("lengths,multiple,width", [([5, 1, 3], None, 5), ([5, 1, 3], 8, 8), ([8, 8], 8, 8),
                                                    ([9], 4, 12), ([1], None, 1)])
def test_rows_are_right_padded_to_the_longest_or_the_next_multiple(lengths, multiple, width):
    rows = rows_of(lengths)
    batch = Collator(pad_token_id=2, pad_to_multiple_of=multiple)(rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (len(rows), width)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        assert batch["input_ids"][i].tolist() == r["input_ids"].tolist() + [2] * (width - n)
        assert batch["labels"][i].tolist() == r["labels"].tolist() + [IGNORE_INDEX] * (width - n)
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
    assert {batch[k].dtype for k in ("input_ids", "labels", "attention_mask")} == {torch.long}


def test_a_row_whose_labels_do_not_match_its_ids_is_named():
    rows = rows_of([4, 3])
    rows[1]["labels"] = rows[1]["labels"][:2]
    with pytest.raises(ValueError, match="row 'r1': 2 labels for 3 input_ids"):
        Collator(pad_token_id=0)(rows)
