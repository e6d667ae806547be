import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
from data_fixtures import coco_fixture, llava_fixture, text_fixture, vqa_fixture

from mmpeft.data.schema import SampleError
from mmpeft.data.shards import read_manifest

ROOT = Path(__file__).parents[1]


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


def test_llava_conversion_counts_and_skips(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    out = tmp_path / "shards"
    manifest = script("convert_llava").main(["--json", str(json_path), "--image-root", str(images), "--out", str(out),
                                             "--samples-per-shard", "3", "--workers", "2"])
    assert manifest["num_samples"] == 5 and manifest["image_samples"] == 4 and manifest["text_samples"] == 1
    assert manifest["skipped"] == {"missing_image": 1, "corrupt_image": 1, "no_assistant_turn": 1}
    assert len(manifest["shards"]) == 3 and manifest["input_items"] == 8
    samples = read_shards(out)
    pair = json.loads(samples["000000003"]["json"])
    assert pair["images"] == ["img0.jpg", "img1.png"] and set(samples["000000003"]) == {"json", "img0.jpg", "img1.png"}
    added = json.loads(samples["000000002"]["json"])
    assert added["conversations"][0]["content"] == "<image>\nColor?", "LLaVA puts a missing marker first"
    text = json.loads(samples["000000004"]["json"])
    assert text["images"] == [] and text["conversations"][1] == {"role": "assistant", "content": "4"}
    assert samples["000000000"]["img0.jpg"] == (images / "coco/0000.jpg").read_bytes(), "original bytes kept"


def test_llava_strict_mode_names_file_and_record(tmp_path):
    json_path, images = llava_fixture(tmp_path)
    with pytest.raises(SampleError, match=r"llava.json\[5\] id='bad-missing'.*coco/nope.jpg not found"):
        script("convert_llava").main(["--json", str(json_path), "--image-root", str(images),
                                      "--out", str(tmp_path / "o"), "--strict"])


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


def test_unfinished_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished mmpeft shard directory"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("name", ["convert_llava", "convert_coco_captions", "convert_vqav2", "convert_text"])
def test_scripts_have_help(name):
    with pytest.raises(SystemExit) as exit_info:
        script(name).main(["--help"])
    assert exit_info.value.code == 0
