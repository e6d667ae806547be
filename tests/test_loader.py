import io
import json
import logging
import signal
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
import webdataset as wds
from conftest import build_vision
from PIL import Image
from shard_damage import damage, image_sample, text_sample, write_dir

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator, batch_rows
from mmpeft.data.datamodule import VLDataModule
from mmpeft.data.integrity import PartialData, ShardDamaged
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.mixing import ReplayMixer
from mmpeft.data.pipeline import NoUsableRows, Placement, SampleProcessor, ShardRows, SkipCounts
from mmpeft.data.schema import SampleError, image_field, make_record
from mmpeft.towers.llm import LLMTower
from mmpeft.types import IGNORE_INDEX

COLOURS = ["red", "green", "blue", "yellow"]


def write_image_shards(directory, n_shards=4, per_shard=6, corrupt_key=None):
    """Synthetic caption shards; optionally one sample with truncated image bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    urls = []
    for s in range(n_shards):
        url = str(directory / f"img-{s:06d}.tar")
        with wds.TarWriter(url) as w:
            for i in range(per_shard):
                key = f"s{s}_{i}"
                colour = COLOURS[(s + i) % 4]
                buf = io.BytesIO()
                Image.new("RGB", (40, 40), colour).save(buf, format="JPEG")
                data = buf.getvalue()[:200] if key == corrupt_key else buf.getvalue()
                rec = make_record(key, "captions", images=[image_field(0, "jpg")], conversations=[
                    {"role": "user", "content": "<image>\nColour?"}, {"role": "assistant", "content": colour}])
                w.write({"__key__": key, "json": json.dumps(rec).encode(), "img0.jpg": data})
        urls.append(url)
    return urls


def write_text_shards(directory, n_shards=2, per_shard=5):
    directory.mkdir(parents=True, exist_ok=True)
    urls = []
    for s in range(n_shards):
        url = str(directory / f"txt-{s:06d}.tar")
        with wds.TarWriter(url) as w:
            for i in range(per_shard):
                rec = make_record(f"t{s}_{i}", "replay", text=" ".join(["word"] * (1 + 3 * i)))
                w.write({"__key__": f"t{s}_{i}", "json": json.dumps(rec).encode()})
        urls.append(url)
    return urls


@pytest.fixture(scope="module")
def processor(tiny):
    vision = build_vision(tiny, "open_clip")
    tok = LLMTower(str(tiny.llm)).tokenizer
    return SampleProcessor(ChatRenderer(tok, "<image>", num_image_tokens=4), vision.image_transform), tok


def make_loader(processor, image_urls, text_urls=None, ratio=0.0, batch_size=4, workers=0, seed=0, **kw):
    proc, tok = processor
    skips = SkipCounts()
    image_rows = ShardRows(image_urls, proc, skips, seed=seed, shuffle_buffer=8) if image_urls else None
    text_rows = ShardRows(text_urls, proc, skips, seed=seed, shuffle_buffer=8) if text_urls else None
    stream = VLStream(image_rows, text_rows, ratio, batch_size, Collator(tok.pad_token_id), seed=seed, **kw)
    return VLLoader(stream, skips, num_workers=workers)


def test_collator_pads_to_longest_and_flags_rows():
    rows = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]),
         "pixel_values": torch.zeros(2, 3, 4, 4), "id": "a", "source": "x"},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "pixel_values": None, "id": "b", "source": "y"},
    ]
    batch = Collator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4)
    assert batch["has_image"].tolist() == [True, False] and batch["num_images"].tolist() == [2, 0]
    assert Collator(0, pad_to_multiple_of=8)(rows)["input_ids"].shape == (2, 8)


def test_length_bucketing_reduces_padding_and_keeps_every_row():
    lengths = [1 + (7 * i) % 23 for i in range(40)]
    rows = [{"input_ids": torch.ones(n, dtype=torch.long), "labels": torch.ones(n, dtype=torch.long),
             "id": str(i)} for i, n in enumerate(lengths)]
    collate = Collator(0)

    def padding(batches):
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    plain = list(batch_rows(rows, 4, collate))
    bucketed = list(batch_rows(rows, 4, collate, bucket_window=5, seed=1))
    assert sorted(i for b in bucketed for i in b["id"]) == sorted(r["id"] for r in rows)
    assert padding(bucketed) < padding(plain) / 2


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_replay_mixer_ratio_and_determinism(ratio):
    def image_rows(place):
        return ({"kind": "image", "i": i} for i in range(4000))

    def text_rows(place):
        return ({"kind": "text", "i": i} for i in range(7))  # short: restarts

    mixer = ReplayMixer(image_rows, text_rows, ratio, seed=3)
    place = Placement(epoch=0, rank=0, world_size=2, worker=0, num_workers=1)
    rows = list(__import__("itertools").islice(mixer.rows(place), 2000))
    realised = sum(r["kind"] == "text" for r in rows) / len(rows)
    assert abs(realised - ratio) < 0.04
    again = list(__import__("itertools").islice(mixer.rows(place), 2000))
    assert again == rows, "deterministic per seed and placement"
    if 0 < ratio < 1:
        other_rank = list(__import__("itertools").islice(mixer.rows(Placement(rank=1, world_size=2)), 2000))
        assert [r["kind"] for r in other_rank] != [r["kind"] for r in rows]


def test_mixer_needs_the_streams_its_ratio_asks_for():
    with pytest.raises(ValueError, match="needs text-only shards"):
        ReplayMixer(lambda p: [], None, 0.2)
    with pytest.raises(ValueError, match=r"text_ratio must be in \[0, 1\]"):
        ReplayMixer(lambda p: [], lambda p: [], 1.5)


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_sees_every_sample_once_and_reports_skips(tmp_path, processor, workers, caplog):
    urls = write_image_shards(tmp_path / "img", corrupt_key="s2_3")
    loader = make_loader(processor, urls, batch_size=4, workers=workers)
    with caplog.at_level(logging.INFO, logger="mmpeft.data.loader"):
        ids = [i for batch in loader for i in batch["id"]]
    expected = {f"s{s}_{i}" for s in range(4) for i in range(6)} - {"s2_3"}
    assert sorted(ids) == sorted(expected), "no duplicates, nothing lost but the corrupt sample"
    stats = loader.history[-1]
    assert stats.skipped == {"corrupt_image": 1} and stats.rows == 23
    assert "skipped: corrupt_image: 1" in caplog.text
    ids_epoch1 = [i for batch in loader for i in batch["id"]]
    assert sorted(ids_epoch1) == sorted(ids) and ids_epoch1 != ids, "a new epoch reshuffles"


def test_batches_reach_the_model_contract(tmp_path, processor):
    urls = write_image_shards(tmp_path / "img", n_shards=1)
    batch = next(iter(make_loader(processor, urls, text_urls=write_text_shards(tmp_path / "txt"), ratio=0.5,
                                  batch_size=6, seed=1)))
    image_id = processor[1].convert_tokens_to_ids("<image>")
    per_row = (batch["input_ids"] == image_id).sum(1)
    assert per_row.tolist() == [4 * int(h) for h in batch["has_image"]]
    assert batch["pixel_values"].shape == (int(batch["has_image"].sum()), 3, 32, 32)
    assert (batch["labels"][batch["input_ids"] == image_id] == IGNORE_INDEX).all()


def test_ranks_split_shards_without_overlap(tmp_path, processor):
    urls = write_image_shards(tmp_path / "img", n_shards=4)
    proc, _ = processor
    rows = ShardRows(urls, proc, SkipCounts(), seed=5)
    seen = [[r["id"] for r in rows(Placement(epoch=2, rank=rank, world_size=2))] for rank in range(2)]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 24


def test_realised_ratio_logged(tmp_path, processor, caplog):
    loader = make_loader(processor, write_image_shards(tmp_path / "img"), write_text_shards(tmp_path / "txt"),
                         ratio=0.25, batch_size=4)
    with caplog.at_level(logging.INFO, logger="mmpeft.data.loader"):
        rows = Counter(s for b in loader for s in b["source"])
    stats = loader.history[-1]
    assert rows["captions"] == 24 and stats.text_rows == rows["replay"]
    assert f"text-only {stats.text_ratio:.1%} (target 25.0%)" in caplog.text


def test_strict_mode_raises_with_shard_and_key(tmp_path, processor):
    urls = write_image_shards(tmp_path / "img", n_shards=1, corrupt_key="s0_2")
    proc, _ = processor
    rows = ShardRows(urls, proc, SkipCounts(), shuffle=False, strict=True)
    with pytest.raises(SampleError, match=r"img-000000.tar:s0_2.*cannot be decoded"):
        list(rows(Placement()))


def test_strict_mode_raises_on_lost_rows(tmp_path, processor):
    urls = write_dir(tmp_path / "img", 6, 6)
    damage(urls[0], "zero_header", "000004")
    rows = ShardRows(urls, processor[0], SkipCounts(), shuffle=False, strict=True)
    with pytest.raises(ShardDamaged, match=r"shard-000000.tar: corrupt_shard, 2 row\(s\) lost \(4 of 6"):
        list(rows(Placement()))


def test_resampled_needs_an_epoch_length(tmp_path, processor):
    proc, tok = processor
    rows = ShardRows(write_image_shards(tmp_path / "img", n_shards=1), proc, SkipCounts(), resampled=True)
    with pytest.raises(ValueError, match="set rows_per_epoch"):
        VLStream(rows, None, 0.0, 4, Collator(0))
    stream = VLStream(rows, None, 0.0, 4, Collator(tok.pad_token_id), rows_per_epoch=10)
    assert sum(len(b["id"]) for b in VLLoader(stream, SkipCounts())) == 10


def test_shards_without_a_manifest_still_report_damage_with_unknown_counts(tmp_path, processor, caplog):
    urls = write_image_shards(tmp_path / "img", n_shards=2, per_shard=6)  # raw TarWriter: no manifest
    data = open(urls[0], "rb").read()
    open(urls[0], "wb").write(data[: len(data) // 2])
    with caplog.at_level(logging.INFO):
        loader = make_loader(processor, urls, batch_size=4)
        ids = [i for b in loader for i in b["id"]]
    assert {f"s1_{i}" for i in range(6)} <= set(ids) and len(ids) < 12
    stats = loader.history[-1]
    assert stats.damaged == {urls[0]: "truncated_shard"} and stats.lost == {} and stats.unchecked_reads == 2
    assert "rows lost to damaged shards cannot be counted" in caplog.text, "says the counts are unchecked"
    assert f"unknown number of rows (no manifest count) in {urls[0]} (truncated_shard)" in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_lost_rows_are_reported_per_shard_and_epoch(tmp_path, processor, workers, caplog):
    urls = write_dir(tmp_path / "img", 24, 6)  # the project's writer: shards + manifest.json
    damage(urls[1], "cut_at_boundary", "000009")  # holds 000006-000011: 3 rows lost, and tarfile ends quietly
    damage(urls[2], "garbage_header", "000014")  # holds 000012-000017: 4 rows lost, also quietly
    loader = make_loader(processor, urls, batch_size=4, workers=workers)
    for epoch in range(2):
        with caplog.at_level(logging.INFO, logger="mmpeft.data.loader"):
            ids = [i for b in loader for i in b["id"]]
        stats = loader.history[-1]
        assert stats.lost == {urls[1]: {"truncated_shard": 3}, urls[2]: {"corrupt_shard": 4}}, f"epoch {epoch}"
        assert len(ids) + sum(stats.skipped.values()) + stats.lost_rows == 24 == len(ids) + 7
        assert stats.unchecked_reads == 0 and stats.damaged == {}
        metrics = stats.metrics()
        assert (metrics["lost"], metrics["lost_truncated_shard"], metrics["lost_corrupt_shard"]) == (7, 3, 4)
        assert f"lost: 7 rows ({urls[1]}: truncated_shard 3; {urls[2]}: corrupt_shard 4)" in caplog.text
        caplog.clear()


def test_partial_reads_report_no_false_losses(tmp_path, processor):
    proc, tok = processor
    urls = write_dir(tmp_path / "img", 24, 6)
    for resampled, rows_per_epoch in ((False, 9), (True, 30)):  # cut inside a shard / drawn with replacement
        skips = SkipCounts()
        rows = ShardRows(urls, proc, skips, resampled=resampled, shuffle_buffer=1)
        loader = VLLoader(VLStream(rows, None, 0.0, 4, Collator(tok.pad_token_id), rows_per_epoch=rows_per_epoch),
                          skips)
        assert sum(len(b["id"]) for b in loader) == rows_per_epoch
        reads = skips.shard_reads()
        assert loader.history[-1].lost == {} and loader.history[-1].damaged == {}
        assert reads[:, SkipCounts.READS].sum() < reads[:, SkipCounts.ROWS].sum() / 6, "some reads were cut short"
    damage(urls[0], "cut_at_boundary", "000003")
    skips = SkipCounts()
    rows = ShardRows(urls, proc, skips, resampled=True, shuffle_buffer=1)
    loader = VLLoader(VLStream(rows, None, 0.0, 4, Collator(tok.pad_token_id), rows_per_epoch=60), skips)
    list(loader)
    complete = int(skips.shard_reads()[0, SkipCounts.READS])
    assert complete >= 1 and loader.history[-1].lost == {urls[0]: {"truncated_shard": 3 * complete}}, \
        "a resampled shard loses its rows on every complete read"


@contextmanager
def bounded(seconds: int):
    """Fail instead of hanging: an epoch with nothing usable used to spin forever (and Lightning defers SIGTERM
    to the next batch, which never came)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the data pipeline spins on unusable data")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", ["images_too_long", "replay_too_long", "resampled_too_long", "corrupt_shards"])
def test_data_with_nothing_usable_stops_at_once_with_the_fix(tmp_path, processor, case):
    proc, tok = processor
    long_images = case in ("images_too_long", "resampled_too_long")
    image_dir, text_dir = tmp_path / "img", tmp_path / "txt"
    urls = write_dir(image_dir, 16, 4, lambda i: image_sample(i, words=200 if long_images else 0))
    write_dir(text_dir, 8, 4, lambda i: text_sample(i, words=300 if case == "replay_too_long" else 4))
    if case == "corrupt_shards":
        for i, url in enumerate(urls):
            damage(url, "garbage_header", f"{4 * i:06d}")  # at each shard's first sample: nothing readable
    replay, resampled = case == "replay_too_long", case == "resampled_too_long"
    data = VLDataModule(train_shards=str(image_dir), text_shards=str(text_dir), max_length=64, batch_size=4,
                        num_workers=2 if replay else 0, shuffle_buffer=4, text_ratio=0.5 if replay else 0.0,
                        resampled=resampled, rows_per_epoch=8 if resampled else None)
    data.connect(tok, proc.image_transform, "<image>", 4)
    loader = data.train_dataloader()
    with bounded(30), pytest.raises(NoUsableRows) as raised:
        for _ in range(3):  # epochs: the first must already fail
            list(loader)
    message = str(raised.value)
    assert message.startswith("train data gave no usable row (epoch 0")
    if case == "corrupt_shards":
        assert "corrupt_shard" in message and "re-run its data_prep converter" in message and urls[0] in message
    else:
        assert "too_long" in message and "raise data.max_length, or set data.overlong=truncate" in message
        assert str(text_dir if replay else image_dir) in message, "names the shards"
        assert not replay or str(image_dir) not in message, "only the stream that gave nothing"


def test_too_few_shards_for_the_readers_is_a_clear_error(tmp_path, processor):
    proc, _ = processor
    rows = ShardRows(write_image_shards(tmp_path / "img", n_shards=1), proc, SkipCounts())
    with pytest.raises(ValueError, match=r"1 shard\(s\) cannot feed 2 rank\(s\) x 1 worker\(s\)"):
        list(rows(Placement(rank=0, world_size=2)))


def partial_eval_set(directory, long_key=5):
    """8 rows in 2 manifest-checked shards: sample ``long_key`` over-long at max_length 128 (skipped: too_long),
    shard 0 cut before 000002 (000002-000003 lost: truncated_shard). 5 rows remain."""
    urls = write_dir(directory, 8, 4, lambda i: image_sample(i, words=300 if i == long_key else 0))
    damage(urls[0], "cut_at_boundary", "000002")
    return urls


def eval_data(processor, shards, **kw):
    proc, tok = processor
    data = VLDataModule(val_shards=shards, test_shards=shards, max_length=128, batch_size=4, eval_batch_size=2,
                        num_workers=0, **kw)
    data.connect(tok, proc.image_transform, "<image>", 4)
    return data


def test_val_and_test_passes_refuse_a_partial_set_unless_allowed(tmp_path, processor, caplog):
    urls = partial_eval_set(tmp_path / "val")
    data = eval_data(processor, str(tmp_path / "val"))
    for name, loader in (("val", data.val_dataloader()), ("test", data.test_dataloader())):
        with pytest.raises(PartialData) as raised:
            list(loader)
        message = str(raised.value)
        assert message.startswith(f"refusing to score a partial {name} set (epoch 0, 5 rows read): 1 sample(s) "
                                  "skipped, 2 row(s) lost")
        assert f"{urls[0]} (truncated_shard: 2 rows lost); {urls[1]} (1 of 4 samples skipped)" in message
        assert "skipped: too_long: 1" in message and "raise data.max_length" in message
        assert "re-run its data_prep converter" in message, "the fix for the lost rows"
        assert f"data.allow_partial_eval=true (--data.allow_partial_eval=true): the counts are then logged as " \
               f"{name}/data/skipped" in message
    allowed = eval_data(processor, str(tmp_path / "val"), allow_partial_eval=True).val_dataloader()
    with caplog.at_level(logging.WARNING, logger="mmpeft.data.loader"):
        ids = [i for b in allowed for i in b["id"]]
    assert sorted(ids) == ["colour-0", "colour-1", "colour-4", "colour-6", "colour-7"]
    assert "val data is partial (1 sample(s) skipped, 2 row(s) lost), scored anyway as allowed: 5 rows" in caplog.text
    metrics = allowed.finish_eval_pass()
    assert (metrics["rows"], metrics["skipped"], metrics["lost"], metrics["lost_truncated_shard"]) == (5, 1, 2, 2)


def test_a_pass_cut_short_is_judged_on_what_it_read(tmp_path, processor):
    urls = partial_eval_set(tmp_path / "val", long_key=1)  # shard 0 (read through by the first batch) skips one
    loader = eval_data(processor, str(tmp_path / "val")).val_dataloader()
    next(iter(loader))  # limit_val_batches=1, or the sanity check: the pass stops here
    with pytest.raises(PartialData, match=r"partial val set \(epoch 0, 2 rows read before the pass was cut short\): "
                                          r"1 sample\(s\) skipped, 2 row\(s\) lost") as raised:
        loader.finish_eval_pass()
    assert urls[1] not in str(raised.value), "a shard not read yet is not judged"
    clean = eval_data(processor, write_dir(tmp_path / "clean", 6, 3)).val_dataloader()
    assert clean.finish_eval_pass() == {}, "no pass yet"
    next(iter(clean))
    assert clean.finish_eval_pass()["skipped"] == 0


def test_allow_partial_eval_must_be_a_bool():
    with pytest.raises(ValueError, match=r"data.allow_partial_eval='yes': must be true or false"):
        VLDataModule(val_shards="x", allow_partial_eval="yes")
