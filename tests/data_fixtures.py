"""Small inputs in the official source schemas (LLaVA, COCO captions, VQAv2, text JSONL), with planted bad items."""

from __future__ import annotations

import functools
import json
import struct
import zlib
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 230, 40)}


def save_image(path: Path, colour: str, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path)
    return path


def write_corrupt_jpeg(path: Path) -> Path:
    save_image(path, "red", size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated
    return path


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG of ``width x height``: a few KB on disk, ``width * height`` pixels once
    decoded. 15000x15000 is over twice PIL's default MAX_IMAGE_PIXELS (DecompressionBombError at open);
    10000x10000 is between 1x and 2x (PIL only warns, and would decode 100 M pixels)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits of one row
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def llava_fixture(root: Path) -> tuple[Path, Path]:
    """19 records (index: what): 0-3 good image records (3 has a list of two images and two markers in one turn),
    4 text-only, 5 missing image, 6 corrupt image, 7 no assistant turn, 8 int id + leading gpt turn, 9 float id +
    system turn, 10 no id, 11 image without marker, 12 ``"image": 5``, 13 turns out of order, 14 marker in a gpt
    turn, 15 interleaved two images, 16 decompression bomb (PIL error), 17 decompression bomb (PIL warning),
    18 one image with two markers in one turn."""
    images = root / "images"
    for i, c in enumerate(COLOURS):
        save_image(images / f"coco/{i:04d}.jpg", c)
    save_image(images / "extra/pair.png", "green")
    write_corrupt_jpeg(images / "coco/broken.jpg")
    (images / "big").mkdir()
    (images / "big/bomb.png").write_bytes(png_bomb(15000, 15000))
    (images / "big/warn.png").write_bytes(png_bomb(10000, 10000))

    def chat(*values: str, first: str = "human") -> list[dict[str, str]]:
        other = {"human": "gpt", "gpt": "human"}
        roles = [first]
        while len(roles) < len(values):
            roles.append(other[roles[-1]])
        return [{"from": r, "value": v} for r, v in zip(roles, values)]

    recs = [
        {"id": "a1", "image": "coco/0000.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is it?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes, red."}]},
        {"id": "a2", "image": "coco/0001.jpg", "conversations": [
            {"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "A green picture."}]},
        {"id": "a3", "image": "coco/0002.jpg", "conversations": [
            {"from": "human", "value": "What <image> color?  "}, {"from": "gpt", "value": " Blue. "}]},
        {"id": "a4", "image": ["coco/0003.jpg", "extra/pair.png"], "conversations": [
            {"from": "human", "value": "<image> and <image>: same color?"}, {"from": "gpt", "value": "No."}]},
        {"id": "t1", "conversations": [
            {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
        {"id": "bad-missing", "image": "coco/nope.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "bad-corrupt", "image": "coco/broken.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "bad-noanswer", "image": "coco/0000.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}]},
        {"id": 42, "image": "coco/0001.jpg", "conversations": chat("Welcome.", "What is this? <image>", "Green.",
                                                                   first="gpt")},
        {"id": 7.5, "conversations": [{"from": "system", "value": "Be brief."}] + chat("Hi", "Hello")},
        {"conversations": chat("No id here.", "Fine.")},
        {"id": "bad-nomarker", "image": "coco/0002.jpg", "conversations": chat("Color?", "Blue.")},
        {"id": "bad-type", "image": 5, "conversations": chat("<image>\nHi", "Hello")},
        {"id": "bad-order", "conversations": chat("Hi", "Hello") + chat("One", "Two", first="gpt")},
        {"id": "bad-gptmarker", "image": "coco/0000.jpg", "conversations": chat("Hi", "Look: <image>")},
        {"id": "a15", "image": ["coco/0000.jpg", "coco/0001.jpg"], "conversations": chat(
            "First: <image>", "Red.", "<image> and this one?", "Green.")},
        {"id": "bad-bomb", "image": "big/bomb.png", "conversations": chat("<image>\nHi", "Hello")},
        {"id": "bad-warn", "image": "big/warn.png", "conversations": chat("<image>\nHi", "Hello")},
        {"id": "a18", "image": "coco/0003.jpg", "conversations": chat("<image> same as <image>?", "Yes.")},
    ]
    path = root / "llava.json"
    path.write_text(json.dumps(recs))
    return path, images


def coco_fixture(root: Path) -> tuple[Path, Path, Path]:
    images = root / "val2014"
    entries, anns = [], []
    for i, c in enumerate(COLOURS):
        name = f"COCO_val2014_{i + 1:012d}.jpg"
        save_image(images / name, c)
        entries.append({"id": i + 1, "file_name": name, "width": 40, "height": 30})
        for j, cap in enumerate([f"A {c} square.", f"Something {c}.", f"A plain {c} image"]):
            anns.append({"id": 100 * (i + 1) + j, "image_id": i + 1, "caption": cap})
    entries.append({"id": 99, "file_name": "COCO_val2014_000000000099.jpg"})  # image file missing
    ann_path = root / "captions_val2014.json"
    ann_path.write_text(json.dumps({"info": {}, "images": entries, "annotations": anns}))
    karpathy = root / "dataset_coco.json"
    splits = ["test", "test", "restval", "val", "test"]
    karpathy.write_text(json.dumps({"images": [
        {"cocoid": e["id"], "filename": e["file_name"], "split": s, "sentences": []} for e, s in zip(entries, splits)
    ]}))
    return ann_path, images, karpathy


def vqa_fixture(root: Path) -> tuple[Path, Path, Path]:
    images = root / "val2014"
    for i, c in enumerate(COLOURS):
        save_image(images / f"COCO_val2014_{i + 1:012d}.jpg", c)
    questions, annotations = [], []
    for i, c in enumerate(COLOURS):
        qid = (i + 1) * 10
        questions.append({"image_id": i + 1, "question": "What color is the image?", "question_id": qid})
        answers = [c] * 8 + ["orange", f"{c}ish"]
        annotations.append({
            "question_id": qid, "image_id": i + 1, "question_type": "what color is the", "answer_type": "other",
            "multiple_choice_answer": c,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)],
        })
    questions.append({"image_id": 1, "question": "Unannotated?", "question_id": 999})
    q_path = root / "v2_OpenEnded_mscoco_val2014_questions.json"
    q_path.write_text(json.dumps({"data_subtype": "val2014", "task_type": "OpenEnded", "questions": questions}))
    a_path = root / "v2_mscoco_val2014_annotations.json"
    a_path.write_text(json.dumps({"data_subtype": "val2014", "annotations": annotations}))
    return q_path, a_path, images


def text_fixture(root: Path, n: int = 6) -> Path:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Count to {i}."},
                                      {"role": "assistant", "content": " ".join(map(str, range(1, i + 2)))}]})
             for i in range(n)]
    lines.append(json.dumps({"text": "The quick brown fox jumps over the lazy dog.", "id": "plain"}))
    lines.append("{not json")
    lines.append(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))
    path = root / "replay.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
