#!/usr/bin/env python
"""LLaVA conversation JSON -> mmpeft webdataset shards.

Reads the LLaVA-Instruct-150K / llava_v1_5_mix665k shape: a JSON list of
``{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``; ``<image>`` marks the image
in a human turn, records without ``image`` are text-only. Image paths are relative to ``--image-root``.

    python data_prep/convert_llava.py --json llava_v1_5_mix665k.json --image-root data/ --out shards/llava665k

Bad records (missing or corrupt image, no assistant turn, marker/image mismatch) are skipped and counted; --strict
stops at the first. Re-running resumes: complete shards are kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def load_records(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e}); expected a list of LLaVA records") from e
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a JSON list of records with 'conversations', got {type(data).__name__}")
    return data


def make_prepare(json_path: Path, image_root: Path, source: str):
    def prepare(item: tuple[int, Any]) -> PreparedSample:
        index, rec = item
        where = f"{json_path.name}[{index}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
            raise SampleError("malformed_json", "record needs a 'conversations' list", where)
        where = f"{where} id={rec.get('id')!r}"
        turns = []
        for turn in rec["conversations"]:
            if not isinstance(turn, dict) or turn.get("from") not in ROLE_OF or not isinstance(turn.get("value"), str):
                raise SampleError("malformed_json", f"turn {turn!r} needs 'from' in {sorted(ROLE_OF)} and a "
                                  "string 'value'", where)
            turns.append({"role": ROLE_OF[turn["from"]], "content": turn["value"]})
        images = rec.get("image")
        paths = [] if images is None else [images] if isinstance(images, str) else list(images)
        files = {}
        for i, rel in enumerate(paths):
            data, ext = read_image_file(image_root / rel, where)
            files[image_field(i, ext)] = data
        if paths and not any(IMAGE_MARKER in t["content"] for t in turns):
            # LLaVA's own preprocessing puts the image before the first human turn's text.
            first_user = next((t for t in turns if t["role"] == "user"), None)
            if first_user is None:
                raise SampleError("image_marker", "record has an image but no human turn", where)
            first_user["content"] = IMAGE_MARKER + "\n" + first_user["content"]
        record = make_record(str(rec.get("id", index)), source, conversations=turns, images=list(files))
        return PreparedSample(key=f"{index:09d}", record=record, files=files)

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path, help="LLaVA conversation JSON (a list of records)")
    parser.add_argument("--image-root", required=True, type=Path, help="directory the 'image' paths are relative to")
    parser.add_argument("--source", default="llava", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = list(enumerate(load_records(args.json)))
    return write_shards_from_args(args, items, make_prepare(args.json, args.image_root, args.source),
                                  description=f"LLaVA {args.json.name}")


if __name__ == "__main__":
    main()
