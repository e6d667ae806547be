#!/usr/bin/env python
"""POPE -> mmpeft eval shards, with lmms-eval's ``pope`` prompt.

Input (AoiDragon/POPE's release, ``output/coco/``): ``coco_pope_adversarial.json``, ``coco_pope_popular.json``,
``coco_pope_random.json`` -- JSON Lines, one ``{"question_id", "image", "text", "label"}`` per line (``label`` yes
or no) -- and the COCO val2014 images (``--image-root`` holds ``COCO_val2014_*.jpg``). The split of each file is
the word after ``_pope_`` in its name (``adversarial``, ``popular``, ``random``).

    python data_prep/convert_pope.py --questions output/coco/coco_pope_*.json --image-root val2014 --out shards/pope

The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf, ``lmms_eval/tasks/pope/utils.py``
``pope_doc_to_text`` with ``pope.yaml``'s default ``post_prompt``), after the image marker as its llava model places
it: ``<image>\\n`` + the question stripped + ``--prompt-suffix``. The assistant turn is the label. ``eval``:
answer (yes/no), category (the split), question_id (``<split>-<question_id>``: POPE numbers each file from 1),
image_id (the image file name).

One bad line is one counted skip naming the file and line: not JSON, not an object with a string ``text``, a label
yes/no, an integer ``question_id`` and a plain image file name (``malformed_json``), a question id seen before in
its split (``malformed_json``), a missing, corrupt or oversized image.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, check_key, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import parse_json_line, read_json_lines

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."
_SPLIT = re.compile(r"_pope_([A-Za-z0-9]+)")


def split_of(path: Path) -> str:
    match = _SPLIT.search(path.stem)
    if not match:
        raise SystemExit(f"{path}: no split in the file name; POPE's files are named <dataset>_pope_<split>.json "
                         "(e.g. coco_pope_random.json)")
    return match.group(1)


def well_formed(q: Any) -> bool:
    return (isinstance(q, dict) and isinstance(q.get("text"), str) and bool(q["text"].strip())
            and str(q.get("label", "")).lower().strip() in ("yes", "no")
            and isinstance(q.get("question_id"), int) and not isinstance(q.get("question_id"), bool)
            and isinstance(q.get("image"), str) and Path(q["image"]).name == q["image"]
            and q["image"] not in ("", ".", ".."))


def load_items(paths: list[Path]) -> list[dict[str, Any] | SampleError]:
    """One item per good line of each file (files in the given order), then one ``SampleError`` per bad line."""
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    splits: dict[str, Path] = {}
    for path in paths:
        split = split_of(path)
        if split in splits:
            raise SystemExit(f"{path} and {splits[split]} are both split {split!r}; give one file per split")
        splits[split] = path
        seen: set[int] = set()
        for line_no, line in read_json_lines(path):
            where = f"{path.name}:{line_no}"
            try:
                q = parse_json_line(line, path, line_no)
            except SampleError as e:
                bad.append(e)
                continue
            if not well_formed(q):
                bad.append(SampleError("malformed_json", f"{str(q)[:200]} needs an integer 'question_id', a "
                                       "non-empty string 'text', 'label' yes/no and 'image' a plain file name", where))
            elif q["question_id"] in seen:
                bad.append(SampleError("malformed_json", f"question_id {q['question_id']} repeats an earlier line "
                                       f"of {path.name}", where))
            else:
                seen.add(q["question_id"])
                items.append({"q": q, "split": split, "where": where})
    return items + bad


def make_prepare(image_root: Path, suffix: str, source: str):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        q, split, where = item["q"], item["split"], item["where"]
        qid = f"{split}-{q['question_id']}"
        key = check_key(f"pope-{qid}", where)
        data, ext = read_image_file(image_root / q["image"], where)
        label = q["label"].lower().strip()
        turns = [{"role": "user", "content": f"{IMAGE_MARKER}\n{q['text'].strip()}{suffix}"},
                 {"role": "assistant", "content": label}]
        record = make_record(key, source, conversations=turns, images=[image_field(0, ext)],
                             eval_fields={"answer": label, "category": split, "question_id": qid,
                                          "image_id": q["image"]}, where=where)
        return PreparedSample(key=key, record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, type=Path, nargs="+", help="coco_pope_<split>.json file(s)")
    parser.add_argument("--image-root", required=True, type=Path, help="directory of the COCO val2014 images")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question (lmms-eval's "
                        "default post_prompt)")
    parser.add_argument("--source", default="pope", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = load_items(args.questions)
    return write_shards_from_args(
        args, items, make_prepare(args.image_root, args.prompt_suffix, args.source),
        description="POPE", converter="convert_pope",
        options={"image_root": str(args.image_root.resolve()), "prompt_suffix": args.prompt_suffix,
                 "source": args.source},
        inputs={f"questions_{split_of(p)}": p for p in args.questions})


if __name__ == "__main__":
    main()
