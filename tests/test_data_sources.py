"""data.sources: LLaVA / ShareGPT JSON, messages JSONL, parquet and save_to_disk tables read directly, mixed by
weight, give the same batches as shards of the same conversations (through the real pipeline, tiny towers)."""

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import build_vision
from data_fixtures import save_image

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator
from mmpeft.data.datamodule import VLDataModule
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.mixing import MixSource, WeightedMixer
from mmpeft.data.pipeline import SampleProcessor, ShardRows, SkipCounts
from mmpeft.data.record_rows import RecordRows
from mmpeft.data.shard_specs import resolve_shards
from mmpeft.data.sources import check_sources
from mmpeft.towers.llm import LLMTower

ROOT = Path(__file__).resolve().parents[1]
# (colour or None for text-only, question, answer, second user turn or None)
DIALOGS = [("red", "What colour is this?", "red", None), (None, "Say hello.", "hello", None),
           ("blue", "Name the colour.", "blue", "Are you sure?"), ("green", "What colour is this?", "green", None),
           (None, "Count to two.", "one two", None), ("yellow", "Colour?", "yellow", None)]
SECOND_ANSWER = "yes"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def processor(tiny):
    vision = build_vision(tiny, "open_clip")
    tok = LLMTower(str(tiny.llm)).tokenizer
    return SampleProcessor(ChatRenderer(tok, "<image>", num_image_tokens=4), vision.image_transform), tok, vision


def llava_records(images: Path) -> list[dict]:
    records = []
    for i, (colour, question, answer, follow) in enumerate(DIALOGS):
        # record 3 puts the marker after the question: LLaVA's placement moves it to the front, as every other
        # format below writes it
        text = f"{question}\n<image>" if i == 3 else (f"<image>\n{question}" if colour else question)
        turns = [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
        if follow:
            turns += [{"from": "human", "value": follow}, {"from": "gpt", "value": SECOND_ANSWER}]
        rec = {"id": f"r{i}", "conversations": turns}
        if colour:
            save_image(images / f"{colour}.png", colour)
            rec["image"] = f"{colour}.png"
        records.append(rec)
    return records


def messages_of(colour, question, answer, follow, image_part):
    first = [image_part, {"type": "text", "text": question}] if colour else [{"type": "text", "text": question}]
    msgs = [{"role": "user", "content": first}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    if follow:
        msgs += [{"role": "user", "content": [{"type": "text", "text": follow}]},
                 {"role": "assistant", "content": [{"type": "text", "text": SECOND_ANSWER}]}]
    return msgs


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """The same six conversations in every format; returns {format name: source entry}."""
    import datasets

    root = tmp_path_factory.mktemp("formats")
    patch = pytest.MonkeyPatch()  # load_dataset's cache, for this module: here, not ~/.cache/huggingface
    patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / "hf_cache"))
    images = root / "images"
    llava = llava_records(images)
    (root / "llava.json").write_text(json.dumps(llava))
    script("convert_llava").main(["--json", str(root / "llava.json"), "--image-root", str(images), "--out",
                                  str(root / "shards"), "--workers", "1"])
    sharegpt = [{"id": f"r{i}", "conversations": [{"from": "human" if t["from"] == "human" else "gpt",
                                                   "value": t["value"].replace("What colour is this?\n<image>",
                                                                               "<image>\nWhat colour is this?")}
                                                  for t in rec["conversations"]],
                 **({"images": [rec["image"]]} if "image" in rec else {})} for i, rec in enumerate(llava)]
    (root / "sharegpt.json").write_text(json.dumps(sharegpt))
    with open(root / "messages.jsonl", "w") as f:
        for i, d in enumerate(DIALOGS):
            part = {"type": "image_url", "image_url": {"url": str(images / f"{d[0]}.png")}}
            f.write(json.dumps({"id": f"r{i}", "messages": messages_of(*d, part)}) + "\n")
    # parquet, ShareGPT layout under other column names, datasets Image features holding paths
    image_feature = datasets.List(datasets.Image())
    table = {"uid": [r["id"] for r in sharegpt], "dialog": [r["conversations"] for r in sharegpt],
             "pics": [[str(images / p) for p in r.get("images", [])] for r in sharegpt]}
    features = datasets.Features({"uid": datasets.Value("string"),
                                  "dialog": datasets.List({"from": datasets.Value("string"),
                                                           "value": datasets.Value("string")}),
                                  "pics": image_feature})
    ds = datasets.Dataset.from_dict(table, features=features)
    ds.to_parquet(str(root / "data.parquet"))
    # save_to_disk: messages layout, {"type": "image"} parts taking the row's images in order; the images are
    # stored as bytes (save_to_disk embeds them)
    rows = {"id": [], "messages": [], "images": []}
    for i, d in enumerate(DIALOGS):
        rows["id"].append(f"r{i}")
        rows["messages"].append(messages_of(*d, {"type": "image", "text": None}))
        rows["images"].append([str(images / f"{d[0]}.png")] if d[0] else [])
    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    disk = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "id": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.List(part)}),
        "images": image_feature}))
    disk.save_to_disk(str(root / "disk"))
    yield {
        "shards": {"name": "shards", "path": str(root / "shards")},
        "llava": {"name": "llava", "path": str(root / "llava.json"), "format": "llava", "image_root": str(images)},
        "sharegpt": {"name": "sharegpt", "path": str(root / "sharegpt.json"), "format": "sharegpt",
                     "image_root": str(images)},
        "messages": {"name": "messages", "path": str(root / "messages.jsonl"), "format": "messages"},
        "parquet": {"name": "parquet", "path": str(root / "data.parquet"),
                    "columns": {"conversations": "dialog", "images": "pics", "id": "uid"}},
        "disk": {"name": "disk", "path": str(root / "disk")},
    }
    patch.undo()


def rows_of(entry, processor, skips, **kw):
    spec = check_sources([entry])[0]
    if spec.format == "shards":
        return ShardRows(resolve_shards(list(spec.paths)), processor, skips, shuffle=False)
    return RecordRows(spec, processor, skips, shuffle=False, **kw)


def epoch_batches(entry, processor, tok, batch_size=4):
    skips = SkipCounts()
    stream = VLStream(rows_of(entry, processor, skips), None, 0.0, batch_size, Collator(tok.pad_token_id))
    loader = VLLoader(stream, skips)
    return list(loader), loader


def test_every_format_gives_the_same_batches(formats, processor):
    proc, tok, _ = processor
    assert check_sources([formats["parquet"]])[0].format == "hf"  # auto-detected
    assert check_sources([formats["disk"]])[0].format == "hf"
    assert check_sources([formats["shards"]])[0].format == "shards"
    # the hf tables hold their images both ways: paths (parquet) and bytes (save_to_disk)
    hf = [RecordRows(check_sources([formats[n]])[0], proc, SkipCounts()).table.raw(0) for n in ("parquet", "disk")]
    assert hf[0]["pics"][0]["bytes"] is None and hf[0]["pics"][0]["path"].endswith("red.png")
    assert hf[1]["images"][0]["bytes"].startswith(b"\x89PNG")
    reference, _ = epoch_batches(formats["shards"], proc, tok)
    assert sum(len(b["has_image"]) for b in reference) == len(DIALOGS)
    assert [int(n) for b in reference for n in b["num_images"]] == [1 if d[0] else 0 for d in DIALOGS]
    for name in ("llava", "sharegpt", "messages", "parquet", "disk"):
        batches, loader = epoch_batches(formats[name], proc, tok)
        assert loader.history[-1].skipped == {}, name
        assert len(batches) == len(reference), name
        for got, want in zip(batches, reference):
            assert torch.equal(got["input_ids"], want["input_ids"]), name
            assert torch.equal(got["labels"], want["labels"]), name
            assert torch.equal(got["pixel_values"], want["pixel_values"]), name
            assert got["source"] == [name] * len(got["source"])


def test_llava_source_places_the_marker_as_the_converter_does(formats, processor):
    """Record 3 says "question\n<image>": the llava source moves the marker as convert_llava does; with
    placement: original it stays, and the row differs."""
    proc, tok, _ = processor
    shard = list(ShardRows(resolve_shards(formats["shards"]["path"]), proc, SkipCounts(), shuffle=False)(_place()))
    moved = rows_of(formats["llava"], proc, SkipCounts()).row(3)
    kept = rows_of({**formats["llava"], "placement": "original"}, proc, SkipCounts()).row(3)
    assert torch.equal(moved["input_ids"], shard[3]["input_ids"])
    assert not torch.equal(kept["input_ids"], shard[3]["input_ids"])


def _place():
    from mmpeft.data.pipeline import Placement

    return Placement()


def test_column_mapping_and_options_are_validated(formats, tmp_path):
    (tmp_path / "a.json").write_text("[]")
    good = {"name": "a", "path": str(tmp_path / "a.json"), "format": "llava"}
    cases = [
        ([{**good, "weight": 0}], r"data.sources\[0\].weight"),
        ([good, {**good}], r"data.sources\[1\].name"),
        ([{**good, "format": None}], r"data.sources\[0\].format is not set"),
        ([{**good, "columns": {"messages": "dialog"}}], r"data.sources\[0\].columns: \['messages'\]"),
        ([{**good, "path": str(tmp_path / "missing.json")}], r"data.sources\[0\].path"),
        ([{**good, "colums": {}}], r"data.sources\[0\]: unknown key"),
        ([{**good, "repeat": "yes"}], r"data.sources\[0\].repeat"),
    ]
    for sources, message in cases:
        with pytest.raises(ValueError, match=message):
            check_sources(sources)
    with pytest.raises(ValueError, match="data.sources replaces data.train_shards"):
        VLDataModule(sources=[good], train_shards="x")
    with pytest.raises(ValueError, match="an epoch never ends"):
        VLDataModule(sources=[{**good, "repeat": True}])


def connected(processor, **kw):
    proc, tok, vision = processor
    dm = VLDataModule(**{"batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, **kw})
    dm.connect(tok, vision.image_transform, "<image>", 4)
    return dm


def test_mixture_realised_shares_follow_the_weights_and_are_logged(formats, processor, caplog):
    sources = [{**formats["shards"], "weight": 2, "repeat": True}, {**formats["llava"], "weight": 1, "repeat": True},
               {**formats["messages"], "weight": 1, "repeat": True}]
    dm = connected(processor, sources=sources, rows_per_epoch=400, seed=1)
    loader = dm.train_dataloader()
    with caplog.at_level(logging.INFO, logger="mmpeft.data.loader"):
        rows = sum(len(b["has_image"]) for b in loader)
    assert rows == 400
    metrics = loader.history[-1].metrics()
    assert sum(metrics[f"source_rows/{n}"] for n in ("shards", "llava", "messages")) == 400
    for name, target in (("shards", 0.5), ("llava", 0.25), ("messages", 0.25)):
        assert abs(metrics[f"share/{name}"] - target) < 0.07, (name, metrics)
    assert "mix shards" in caplog.text and "(target 50.0%)" in caplog.text
    assert dm.has_text_rows() is True  # the shards' manifest counts text-only rows


def test_bad_records_are_counted_with_file_line_and_reason(tmp_path, formats, processor, caplog):
    good = json.loads(Path(formats["messages"]["path"]).read_text().splitlines()[0])
    lines = [json.dumps(good), "{not json", json.dumps({"messages": [{"role": "tool", "content": "x"}]}),
             json.dumps({"messages": messages_of("red", "Q?", "A", None,
                                                 {"type": "image_url", "image_url": {"url": "gone.png"}})}),
             json.dumps({"messages": messages_of("red", "Q?", "A", None,
                                                 {"type": "image_url", "image_url": {"url": "https://x/y.png"}})}),
             json.dumps(good)]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    entry = {"name": "bad", "path": str(tmp_path / "bad.jsonl"), "format": "messages"}
    with caplog.at_level(logging.DEBUG, logger="mmpeft.data.pipeline"):
        batches, loader = epoch_batches(entry, processor[0], processor[1])
    assert sum(len(b["has_image"]) for b in batches) == 2
    assert loader.history[-1].skipped == {"malformed_json": 2, "missing_image": 2}
    assert "bad.jsonl:2:" in caplog.text and "not valid JSON" in caplog.text  # file:line:col
    assert "bad.jsonl:3" in caplog.text and "needs 'role'" in caplog.text  # every skip is logged (debug)
    assert "bad.jsonl:4" in caplog.text and "gone.png" in caplog.text and "bad.jsonl:5" in caplog.text
    assert "is not fetched" in caplog.text
    with pytest.raises(Exception, match="bad.jsonl:2"):
        list(RecordRows(check_sources([entry])[0], processor[0], SkipCounts(), strict=True)(_place()))


def test_resume_restores_the_next_batch_of_a_record_source(formats, processor):
    sources = [{**formats["llava"], "weight": 1}, {**formats["messages"], "weight": 1, "repeat": True}]
    first = connected(processor, sources=sources, seed=3, batch_size=2).train_dataloader()
    batches = list(first)
    assert len(batches) >= 3
    resumed = connected(processor, sources=sources, seed=3, batch_size=2).train_dataloader()
    resumed.load_state_dict({"epoch": 0, "next_batch": 2})
    again = list(resumed)
    assert len(again) == len(batches) - 2
    for got, want in zip(again, batches[2:]):
        assert got["id"] == want["id"] and torch.equal(got["input_ids"], want["input_ids"])
    # the next epoch is another order of the same records
    def llava_ids(epoch):
        return [i for b in epoch for i, tag in zip(b["id"], b["source"]) if tag == "llava"]

    following = list(first)
    assert sorted(llava_ids(batches)) == sorted(llava_ids(following)) == [f"r{i}" for i in range(len(DIALOGS))]
    assert llava_ids(batches) != llava_ids(following)


@pytest.mark.parametrize("name", ["sharegpt", "disk"])
def test_records_are_split_across_workers_without_repeats(formats, processor, name):
    dm = connected(processor, sources=[formats[name]], seed=0)
    dm.num_workers = 2
    ids = [i for b in dm.train_dataloader() for i in b["id"]]
    assert sorted(ids) == sorted(f"r{i}" for i in range(len(DIALOGS)))


def test_mixer_with_replay_weights_draws_as_the_replay_mix():
    """text_ratio mixing is the two-source case of the weighted mixer: the same draws."""
    from mmpeft.data.mixing import ReplayMixer
    from mmpeft.data.pipeline import Placement

    def stream(tag, n):
        return lambda place: [f"{tag}{place.epoch}-{i}" for i in range(n)]

    replay = list(ReplayMixer(stream("i", 50), stream("t", 3), 0.3, seed=5).rows(Placement()))
    mixed = list(WeightedMixer([MixSource("t", stream("t", 3), 0.3, repeat=True),
                                MixSource("i", stream("i", 50), 0.7)], seed=5).rows(Placement()))
    assert len([r for r in replay if r.startswith("i")]) == 50
    assert replay == mixed


def test_fit_reads_a_mixture_from_a_data_config_and_logs_each_share(tiny, formats, tmp_path):
    """The CLI path: data.sources in YAML, validated before the towers load, trained on, shares in metrics.csv."""
    import csv

    import yaml

    from mmpeft.apps.main import cli_main

    data = {"data": {"batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, "max_length": 128, "sources": [
        {**formats["llava"], "weight": 1},
        {**formats["parquet"], "weight": 1, "repeat": True}]}}
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump(data))
    base = ["fit", "--config", "trainer/cpu.yaml", "--config", "model/tiny.yaml", "--config", str(config),
            f"--model.vlm.llm.init_args.name={tiny.llm}", f"--model.vlm.vision.init_args.name={tiny.open_clip}",
            "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0"]
    bad = tmp_path / "bad.yaml"
    data["data"]["sources"][1]["weight"] = -1
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"data.sources\[1\].weight=-1"):  # before any tower loads: none exists
        cli_main(base[:6] + [str(bad), "--model.vlm.llm.init_args.name=/nonexistent", f"--run_dir={tmp_path / 'b'}",
                             "--trainer.max_steps=1"])
    run = tmp_path / "run"
    cli_main(base + [f"--run_dir={run}", "--trainer.max_steps=5"])
    logged = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("data/share/llava")]
    assert logged, "the epoch's shares are logged"
    shares = float(logged[0]["data/share/llava"]) + float(logged[0]["data/share/parquet"])
    assert abs(shares - 1) < 1e-6 and float(logged[0]["data/source_rows/llava"]) == len(DIALOGS)
