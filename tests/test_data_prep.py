import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
from data_fixtures import coco_fixture, llava_fixture, png_bomb, text_fixture, vqa_fixture

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.images import decode_image
from mmpeft.data.pipeline import Placement, SampleProcessor, ShardRows, SkipCounts
from mmpeft.data.schema import SampleError, make_record, validate_record
from mmpeft.data.shards import OutputMismatch, PreparedSample, read_manifest, write_shards
from mmpeft.towers.llm import LLMTower

ROOT = Path(__file__).parents[1]
# the decompression-bomb fixtures trip PIL's warning on purpose; what matters is that they are counted skips
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_shards(out: Path) -> dict[str, dict]:
    """key -> {field: bytes} over every shard of a finished directory."""
    samples: dict[str, dict] = {}
    for shard in read_manifest(out)["shards"]:
        with tarfile.open(out / shard["name"]) as tar:
            for member in tar.getmembers():
                key, field = member.name.split(".", 1)
                samples.setdefault(key, {})[field] = tar.extractfile(member).read()
    return samples


# What each converted fixture record must hold under --image-placement llava: (id, eval, [(role, content), ...]).
# Derived by hand from haotian-liu/LLaVA llava/train/train.py @ c121f04 (preprocess_multimodal: remove every
# <image>, strip, prepend "<image>\n", strip; preprocess_v1: drop a leading non-human turn) and, for list images,
# LLaVA-VL/LLaVA-NeXT @ df17966 (only a turn with exactly one marker not already first is moved).
U, A, S = "user", "assistant", "system"
LLAVA_EXPECTED = {
    0: ("a1", {"source_id": "a1"}, [(U, "<image>\nWhat color is it?"), (A, "Red."), (U, "Sure?"), (A, "Yes, red.")]),
    1: ("a2", {"source_id": "a2"}, [(U, "<image>\nDescribe."), (A, "A green picture.")]),
    2: ("a3", {"source_id": "a3"}, [(U, "<image>\nWhat  color?"), (A, " Blue. ")]),  # inner text and gpt untouched
    3: ("a4", {"source_id": "a4"}, [(U, "<image> and <image>: same color?"), (A, "No.")]),  # NeXT: 2 markers stay
    4: ("t1", {"source_id": "t1"}, [(U, "What is 2+2?"), (A, "4")]),
    8: ("42", {"source_id": 42}, [(U, "<image>\nWhat is this?"), (A, "Green.")]),  # leading gpt turn dropped
    9: ("7.5", {"source_id": 7.5}, [(S, "Be brief."), (U, "Hi"), (A, "Hello")]),
    10: ("llava-10", {}, [(U, "No id here."), (A, "Fine.")]),
    15: ("a15", {"source_id": "a15"}, [(U, "<image>\nFirst:"), (A, "Red."), (U, "<image> and this one?"),
                                       (A, "Green.")]),
    18: ("a18", {"source_id": "a18"}, [(U, "<image>\nsame as ?"), (A, "Yes.")]),  # v1.5 collapses both markers
}
LLAVA_SKIPPED = {"missing_image": 1, "corrupt_image": 1, "no_assistant_turn": 1, "image_marker": 2,
                 "malformed_json": 1, "bad_turn_order": 1, "image_too_large": 2}


def convert_llava(json_path, images, out, *extra):
    return script("convert_llava").main(["--json", str(json_path), "--image-root", str(images), "--out", str(out),
                                         "--samples-per-shard", "3", "--workers", "2", *extra])


def test_llava_records_round_trip_as_llava_trains_them(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    source = json.loads(json_path.read_text())
    manifest = convert_llava(json_path, images, tmp_path / "shards")
    assert manifest["input_items"] == len(source) == 19 and len(manifest["shards"]) == 7
    assert manifest["skipped"] == LLAVA_SKIPPED
    assert manifest["num_samples"] + sum(manifest["skipped"].values()) == len(source), "every record accounted for"
    assert manifest["changed"] == {"image_marker_moved": 5, "leading_assistant_turn_dropped": 1}
    samples = read_shards(tmp_path / "shards")
    assert sorted(int(k) for k in samples) == sorted(LLAVA_EXPECTED)
    for index, (sample_id, eval_fields, turns) in LLAVA_EXPECTED.items():
        record = json.loads(samples[f"{index:09d}"]["json"])
        assert record["id"] == sample_id and record["eval"] == eval_fields, index
        assert [(t["role"], t["content"]) for t in record["conversations"]] == turns, index
        if "source_id" in eval_fields:  # the JSON value comes back with its type: int stays int, float float
            assert type(record["eval"]["source_id"]) is type(source[index]["id"])
            assert record["eval"]["source_id"] == source[index]["id"] and record["id"] == str(source[index]["id"])
        paths = source[index].get("image")
        paths = [] if paths is None else [paths] if isinstance(paths, str) else paths
        assert len(record["images"]) == len(paths) == sum(t[1].count("<image>") for t in turns)
        for field, rel in zip(record["images"], paths):
            assert samples[f"{index:09d}"][field] == (images / rel).read_bytes(), "original image bytes kept, in order"
    assert json.loads(samples["000000003"]["json"])["images"] == ["img0.jpg", "img1.png"]


@pytest.mark.parametrize("text, several, expected", [
    # single image (LLaVA v1.5 preprocess_multimodal)
    ("Describe.\n<image>", False, "<image>\nDescribe."),
    ("What is <image> this? ", False, "<image>\nWhat is  this?"),
    ("<image>What", False, "<image>\nWhat"),
    ("<image>\nWhat", False, "<image>\nWhat"),
    ("  \n<image>\n\n Hi \n", False, "<image>\nHi"),
    ("<image>", False, "<image>"),
    ("<image> and <image>", False, "<image>\nand"),
    ("  no marker here  ", False, "  no marker here  "),
    # several images (LLaVA-NeXT): one marker not already first is moved; anything else is kept
    ("Compare <image>", True, "<image>\nCompare"),
    ("<image>What", True, "<image>What"),
    ("<image> and <image>: same?", True, "<image> and <image>: same?"),
])
def test_llava_marker_placement_follows_llava(text, several, expected):
    assert script("convert_llava").place_marker(text, several) == expected


@pytest.mark.parametrize("value, stored", [
    ("x7", "x7"), (42, "42"), (7.5, "7.5"), (None, "fallback"), (True, "fallback"), ([1, 2], "fallback"),
    ({"a": 1}, "fallback"), ("", "fallback")])
def test_llava_ids_of_any_json_type_round_trip(value, stored):
    sample_id, eval_fields = script("convert_llava").record_id({"id": value}, "fallback", "x.json[0]")
    assert sample_id == stored and eval_fields == {"source_id": value}
    assert type(eval_fields["source_id"]) is type(value)  # the JSON value itself, never dropped or coerced
    assert script("convert_llava").record_id({}, "fallback", "x.json[0]") == ("fallback", {})


def test_llava_original_placement_keeps_the_json_text(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    source = json.loads(json_path.read_text())
    manifest = convert_llava(json_path, images, tmp_path / "shards", "--image-placement", "original")
    assert manifest["skipped"] == {**LLAVA_SKIPPED, "image_marker": 3}, "a18: two markers, one image"
    assert manifest["changed"] == {"leading_assistant_turn_dropped": 1}
    samples = read_shards(tmp_path / "shards")
    assert sorted(int(k) for k in samples) == sorted(set(LLAVA_EXPECTED) - {18})
    for key, sample in samples.items():
        turns = [t["value"] for t in source[int(key)]["conversations"]]
        turns = turns[1:] if source[int(key)]["conversations"][0]["from"] == "gpt" else turns
        assert [t["content"] for t in json.loads(sample["json"])["conversations"]] == turns


def test_llava_strict_mode_names_file_and_record(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    with pytest.raises(SampleError, match=r"llava.json\[5\] id='bad-missing'.*coco/nope.jpg not found"):
        script("convert_llava").main(["--json", str(json_path), "--image-root", str(images),
                                      "--out", str(tmp_path / "o"), "--strict"])
    recs = json.loads(json_path.read_text())
    for index, pattern in [(12, r"llava.json\[0\] id='bad-type'.*'image' must be a path or a list of paths, not 5"),
                           (13, r"llava.json\[0\] id='bad-order'.*turn 2 is 'assistant' where 'user' belongs"),
                           (16, r"llava.json\[0\] id='bad-bomb'.*bomb.png.*decompression-bomb limit"),
                           (17, r"llava.json\[0\] id='bad-warn'.*10000x10000 pixels exceed")]:
        one = tmp_path / f"one{index}" / "llava.json"
        one.parent.mkdir()
        one.write_text(json.dumps(recs[index : index + 1]))
        with pytest.raises(SampleError, match=pattern):
            script("convert_llava").main(["--json", str(one), "--image-root", str(images), "--out",
                                          str(one.parent / "o"), "--strict", "--workers", "1"])


def test_conversion_is_idempotent_and_resumes(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    args = ["--json", str(json_path), "--image-root", str(images), "--out", str(out), "--samples-per-shard", "3"]
    convert = script("convert_llava").main
    first = convert(args)
    blobs = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    (out / "shard-000001.stats.json").unlink()  # as if killed while writing shard 1
    (out / "shard-000001.tar").write_bytes(b"partial")
    mtime0 = (out / "shard-000000.tar").stat().st_mtime_ns
    second = convert(args)
    assert second == first
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == blobs, "same inputs, same bytes"
    assert (out / "shard-000000.tar").stat().st_mtime_ns == mtime0, "complete shards are kept, not rewritten"


def kill_after(out: Path, shards: int) -> None:
    """Leave ``out`` as a conversion killed after writing its first ``shards`` shards."""
    (out / "manifest.json").unlink()
    for stats in sorted(out.glob("*.stats.json"))[shards:]:
        stats.unlink()


def tree(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_rerun_with_another_samples_per_shard_refuses_then_overwrites(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    convert_llava(json_path, images, out)  # 3 per shard: 7 shards
    kill_after(out, 4)
    before = tree(out)
    with pytest.raises(SystemExit, match=r"(?s)writer.samples_per_shard: 3 there, 5 now.*--overwrite"):
        convert_llava(json_path, images, out, "--samples-per-shard", "5")
    assert tree(out) == before, "a refused rerun touches nothing"
    redone = convert_llava(json_path, images, out, "--samples-per-shard", "5", "--overwrite")
    fresh = convert_llava(json_path, images, tmp_path / "fresh", "--samples-per-shard", "5")
    assert redone == fresh and redone["num_samples"] == len(LLAVA_EXPECTED), "no sample lost or doubled"
    assert read_shards(out) == read_shards(tmp_path / "fresh")
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(4)], "no stale shard"


def test_rerun_with_another_image_root_refuses_then_overwrites(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    (tmp_path / "wrong").mkdir()
    wrong = convert_llava(json_path, tmp_path / "wrong", out)
    assert wrong["num_samples"] == 3 and wrong["skipped"]["missing_image"] == 13, "only the text-only rows"
    with pytest.raises(SystemExit, match=r"(?s)options.image_root: '.*wrong' there, '.*images' now.*--overwrite"):
        convert_llava(json_path, images, out)
    redone = convert_llava(json_path, images, out, "--overwrite")
    assert redone == convert_llava(json_path, images, tmp_path / "fresh")
    assert redone["num_samples"] == len(LLAVA_EXPECTED) and all(s["samples"] for s in redone["shards"][:3])


def test_conversion_that_keeps_no_sample_fails_naming_the_skips(tmp_path):
    """Every record lost (here: a wrong --image-root) is an error, not an empty shard and exit status 0."""
    records = [{"id": f"r{i}", "image": f"img{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "Red."}]} for i in range(3)]
    json_path = tmp_path / "llava.json"
    json_path.write_text(json.dumps(records))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"(?s)shards: none of the 3 input items was converted.*missing_image: 3.*"
                                         r"llava.json\[0\] id='r0'.*run again with --overwrite"):
        convert_llava(json_path, tmp_path / "empty", tmp_path / "shards")
    assert read_manifest(tmp_path / "shards")["skipped"] == {"missing_image": 3}, "the manifest still records why"
    from PIL import Image

    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / f"img{i}.png")
    fixed = convert_llava(json_path, tmp_path / "images", tmp_path / "shards", "--overwrite")  # as the message says
    assert fixed["num_samples"] == 3 and fixed["skipped"] == {}


def test_rerun_with_changed_input_or_placement_refuses(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    convert_llava(json_path, images, out)
    with pytest.raises(SystemExit, match="options.image_placement: 'llava' there, 'original' now"):
        convert_llava(json_path, images, out, "--image-placement", "original")
    json_path.write_text(json.dumps(json.loads(json_path.read_text())[:-1]))
    with pytest.raises(SystemExit, match=r"(?s)inputs.json.sha256: .*inputs.json.size: .*writer.input_items: 19 "
                                         r"there, 18 now"):
        convert_llava(json_path, images, out)
    assert convert_llava(json_path, images, tmp_path / "other")["input_items"] == 18, "another --out is fine"


def test_output_without_fingerprint_refuses_and_overwrite_keeps_other_files(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    first = convert_llava(json_path, images, out)
    (out / "fingerprint.json").unlink()  # as an older mmpeft left it
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds 15 shard file.* but no fingerprint.json"):
        convert_llava(json_path, images, out)
    assert convert_llava(json_path, images, out, "--overwrite") == first
    assert (out / "notes.txt").read_text() == "mine", "--overwrite deletes only what the writer makes"


def test_fingerprint_is_written_before_any_shard(tmp_path):
    out = tmp_path / "out"
    seen = []

    def prepare(i):
        seen.append((sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp")), i))
        return PreparedSample(key=f"{i:03d}", record=make_record(f"r{i}", "t", text=f"row {i}"))

    write_shards(range(4), prepare, out, samples_per_shard=2, workers=1, fingerprint={"converter": "test"})
    assert seen[0] == (["fingerprint.json"], 0)
    recorded = json.loads((out / "fingerprint.json").read_text())
    assert recorded == {"converter": "test", "writer": {"prefix": "shard", "samples_per_shard": 2, "input_items": 4,
                                                         "schema": 1}}
    assert read_manifest(out)["fingerprint"] == recorded
    with pytest.raises(OutputMismatch, match="writer.input_items: 4 there, 5 now"):
        write_shards(range(5), prepare, out, samples_per_shard=2, workers=1, fingerprint={"converter": "test"})


def test_synthetic_benchmark_rerun_with_another_seed_refuses(tmp_path):
    make = script("make_synthetic_shapes").main
    small = ["--train-scenes", "3", "--eval-scenes", "2", "--eval-per-type", "1", "--image-size", "32"]
    out = tmp_path / "shapes"
    make(["--out", str(out), "--seed", "0", *small])
    kill_after(out / "train", 0)
    with pytest.raises(SystemExit, match="options.seed: 0 there, 1 now"):
        make(["--out", str(out), "--seed", "1", *small])
    (out / "other").mkdir()
    (out / "other" / "shard-000000.tar").write_bytes(b"another dataset")
    make(["--out", str(out), "--seed", "1", *small, "--overwrite"])
    assert (out / "other" / "shard-000000.tar").read_bytes() == b"another dataset", "only its own splits are cleared"
    make(["--out", str(tmp_path / "fresh"), "--seed", "1", *small])
    for split in ("train", "val_vqa", "test_captions"):
        assert read_shards(out / split) == read_shards(tmp_path / "fresh" / split), split


def test_coco_captions_with_karpathy_split(tmp_path):
    ann, images, karpathy = coco_fixture(tmp_path)
    out = tmp_path / "coco_test"
    manifest = script("convert_coco_captions").main([
        "--annotations", str(ann), "--image-root", str(images), "--karpathy", str(karpathy), "--split", "test",
        "--out", str(out)])
    # test split: ids 1, 2 and 99 (99 has neither captions nor an image file)
    assert manifest["num_samples"] == 2 and manifest["skipped"] == {"no_assistant_turn": 1}
    rec = json.loads(read_shards(out)["000000000001_0"]["json"])
    assert rec["eval"] == {"captions": ["A red square.", "Something red.", "A plain red image"], "image_id": 1}
    assert rec["conversations"][1]["content"] == "A red square."
    train = script("convert_coco_captions").main([
        "--annotations", str(ann), "--image-root", str(images), "--karpathy", str(karpathy), "--split", "train",
        "--captions-per-image", "all", "--out", str(tmp_path / "coco_train")])
    assert train["num_samples"] == 3, "restval counts as train; one sample per caption"


def test_vqav2_keeps_all_answers_and_types(tmp_path):
    q, a, images = vqa_fixture(tmp_path)
    out = tmp_path / "vqa"
    manifest = script("convert_vqav2").main(["--questions", str(q), "--annotations", str(a), "--image-root",
                                             str(images), "--out", str(out)])
    assert manifest["num_samples"] == 4 and manifest["skipped"] == {"no_answers": 1}
    rec = json.loads(read_shards(out)["000000000020"]["json"])
    assert rec["eval"]["answers"] == ["green"] * 8 + ["orange", "greenish"]
    assert rec["eval"]["question_type"] == "what color is the" and rec["eval"]["answer_type"] == "other"
    assert rec["eval"]["question_id"] == 20 and rec["eval"]["image_id"] == 2
    assert rec["conversations"][0]["content"].startswith("<image>\nWhat color is the image?\nAnswer the question")


def test_text_jsonl_to_replay_shards(tmp_path):
    path = text_fixture(tmp_path)
    out = tmp_path / "replay"
    manifest = script("convert_text").main(["--jsonl", str(path), "--source", "replay", "--out", str(out)])
    assert manifest["num_samples"] == 7 and manifest["text_samples"] == 7
    assert manifest["skipped"] == {"malformed_json": 1, "no_assistant_turn": 1}
    assert manifest["sources"] == {"replay": 7}


def test_coco_bad_entries_are_counted_skips(tmp_path, capsys):
    ann, images, karpathy = coco_fixture(tmp_path)
    coco = json.loads(ann.read_text())
    coco["images"] += [{"file_name": "no_id.jpg"}, {"id": 1, "file_name": "again.jpg"}, {"id": "7", "file_name": "x"}]
    coco["annotations"] += [{"image_id": 1, "caption": 5}, {"image_id": 12345, "caption": "orphan"}, {"caption": "?"}]
    ann.write_text(json.dumps(coco))
    split = json.loads(karpathy.read_text())
    split["images"].append({"split": "test"})
    karpathy.write_text(json.dumps(split))
    manifest = script("convert_coco_captions").main([
        "--annotations", str(ann), "--image-root", str(images), "--karpathy", str(karpathy), "--split", "test",
        "--out", str(tmp_path / "out")])
    assert manifest["num_samples"] == 2 and manifest["skipped"] == {"malformed_json": 7, "no_assistant_turn": 1}
    assert manifest["input_items"] == 3 + 7
    report = capsys.readouterr().out
    assert "captions_val2014.json images[5]" in report and "'id' (not seen before)" in report


def test_vqav2_bad_entries_are_counted_skips(tmp_path):
    q, a, images = vqa_fixture(tmp_path)
    qs, anns = json.loads(q.read_text()), json.loads(a.read_text())
    qs["questions"] += [{"question_id": 50, "question": "No image id?"}, {"question_id": 10, "image_id": 1,
                                                                           "question": "Same id again?"},
                        {"question_id": 60, "image_id": 1, "question": "Bad answers?"},
                        {"question_id": 70, "image_id": 1, "question": "Answer not a string?"}]
    anns["annotations"] += [{"question_id": 60, "answers": "yes", "multiple_choice_answer": "yes"},
                            {"question_id": 70, "answers": [{"answer": "x"}], "multiple_choice_answer": 3},
                            {"answers": []}, {"question_id": 10, "answers": [{"answer": "again"}]}]
    q.write_text(json.dumps(qs))
    a.write_text(json.dumps(anns))
    manifest = script("convert_vqav2").main(["--questions", str(q), "--annotations", str(a), "--image-root",
                                             str(images), "--out", str(tmp_path / "out")])
    assert manifest["num_samples"] == 4 and manifest["skipped"] == {"no_answers": 1, "malformed_json": 6}
    with pytest.raises(SampleError, match=r"v2_mscoco_val2014_annotations.json annotations\[4\] question_id=60: "
                                          "'answers' must be a list"):
        script("convert_vqav2").main(["--questions", str(q), "--annotations", str(a), "--image-root", str(images),
                                      "--out", str(tmp_path / "strict"), "--strict", "--workers", "1"])


@pytest.mark.parametrize("name, broken", [("convert_llava", "llava.json"), ("convert_coco_captions", "coco.json"),
                                          ("convert_vqav2", "questions.json")])
def test_invalid_json_file_is_a_whole_file_error_naming_line_and_column(tmp_path, name, broken):
    bad = tmp_path / broken
    bad.write_text('[\n  {"id": 1,\n   "conversations": [}\n]')
    good = tmp_path / "good.json"
    good.write_text("{}")
    args = {"convert_llava": ["--json", str(bad)],
            "convert_coco_captions": ["--annotations", str(bad)],
            "convert_vqav2": ["--questions", str(bad), "--annotations", str(good)]}[name]
    with pytest.raises(SystemExit, match=rf"{broken}:3:22: not valid JSON \(Expecting value\)"):
        script(name).main([*args, "--image-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists(), "nothing written"


def test_jsonl_bad_lines_are_counted_with_file_line_and_column(tmp_path, capsys):
    path = text_fixture(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"text": "caf\xe9 not utf-8"}\n')  # line 10
        f.write(json.dumps({"id": [1], "text": "list id"}).encode() + b"\n")
        f.write(json.dumps({"messages": [{"role": "assistant", "content": "hi"},
                                         {"role": "user", "content": "?"}]}).encode() + b"\n")
        f.write(json.dumps({"id": 12, "messages": [{"role": "system", "content": "Be short."},
                                                   {"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}]}).encode() + b"\n")
    manifest = script("convert_text").main(["--jsonl", str(path), "--out", str(tmp_path / "out")])
    assert manifest["num_samples"] == 8
    assert manifest["skipped"] == {"malformed_json": 3, "no_assistant_turn": 1, "bad_turn_order": 1}
    report = capsys.readouterr().out
    assert "replay.jsonl:8:2: not valid JSON" in report and "replay.jsonl:10:" in report
    assert "replay.jsonl:11: 'id' must be" in report
    record = json.loads(read_shards(tmp_path / "out")["000000013"]["json"])
    assert record["id"] == "12" and record["eval"] == {"source_id": 12}
    assert [t["role"] for t in record["conversations"]] == ["system", "user", "assistant"]


@pytest.mark.parametrize("roles, ok", [
    (["user", "assistant"], True),
    (["system", "user", "assistant", "user", "assistant"], True),
    (["user", "assistant", "user"], True),  # LLaVA asserts only alternation: a last human turn passes
    (["assistant", "user", "assistant"], False),
    (["user", "user", "assistant"], False),
    (["user", "assistant", "assistant"], False),
    (["user", "system", "assistant"], False),
    (["system", "system", "user", "assistant"], False),
])
def test_schema_checks_turn_order(roles, ok):
    record = {"schema": 1, "id": "r", "source": "s", "images": [], "text": None,
              "conversations": [{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)]}
    if ok:
        validate_record(record)
    else:
        with pytest.raises(SampleError, match="bad_turn_order|must be") as error:
            validate_record(record, where="x.tar:k")
        assert error.value.reason == "bad_turn_order" and "x.tar:k" in str(error.value)


def test_decode_image_counts_decompression_bombs():
    assert decode_image(png_bomb(64, 48)).size == (64, 48), "the bomb generator writes valid PNGs"
    for size in ((15000, 15000), (10000, 10000)):  # PIL raises / PIL only warns
        with pytest.raises(SampleError, match="decompression-bomb limit") as error:
            decode_image(png_bomb(*size), where="s.tar:k")
        assert error.value.reason == "image_too_large" and len(png_bomb(*size)) < 30_000
    with pytest.raises(SampleError, match="cannot be decoded") as error:
        decode_image(b"\x89PNG\r\n\x1a\n garbage")
    assert error.value.reason == "corrupt_image"


def test_training_loader_counts_bad_turn_order_and_bombs(tmp_path, tiny):
    tok = LLMTower(str(tiny.llm)).tokenizer
    processor = SampleProcessor(ChatRenderer(tok, "<image>", num_image_tokens=2), lambda image: torch.zeros(3, 8, 8))
    good = make_record("good", "s", conversations=[{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}])
    unordered = {**good, "id": "unordered", "conversations": good["conversations"][::-1]}
    bomb = make_record("bomb", "s", images=["img0.png"], conversations=[
        {"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "Black."}])
    url = str(tmp_path / "mixed-000000.tar")
    with wds.TarWriter(url) as writer:
        for key, record in [("a", good), ("b", unordered), ("c", bomb)]:
            extra = {"img0.png": png_bomb(15000, 15000)} if record["images"] else {}
            writer.write({"__key__": key, "json": json.dumps(record).encode(), **extra})
    skips = SkipCounts()
    rows = list(ShardRows([url], processor, skips, shuffle=False)(Placement()))
    assert [r["id"] for r in rows] == ["good"]
    assert skips.totals() == {"bad_turn_order": 1, "image_too_large": 1}


def test_unfinished_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished mmpeft shard directory"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("name", ["convert_llava", "convert_coco_captions", "convert_vqav2", "convert_text"])
def test_scripts_have_help(name):
    with pytest.raises(SystemExit) as exit_info:
        script(name).main(["--help"])
    assert exit_info.value.code == 0
