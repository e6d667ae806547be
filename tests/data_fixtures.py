"""Small inputs in the official source schemas (LLaVA, COCO captions, VQAv2, text JSONL), with planted bad items."""

from __future__ import annotations

import json
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


def llava_fixture(root: Path) -> tuple[Path, Path]:
    """8 records: 4 good image records (one with two images), 1 text-only, 1 missing image, 1 corrupt image,
    1 with no assistant turn."""
    images = root / "images"
    for i, c in enumerate(COLOURS):
        save_image(images / f"coco/{i:04d}.jpg", c)
    save_image(images / "extra/pair.png", "green")
    write_corrupt_jpeg(images / "coco/broken.jpg")
    recs = [
        {"id": "a1", "image": "coco/0000.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is it?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes, red."}]},
        {"id": "a2", "image": "coco/0001.jpg", "conversations": [
            {"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "A green picture."}]},
        {"id": "a3", "image": "coco/0002.jpg", "conversations": [  # no marker: LLaVA prepends it
            {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "Blue."}]},
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
