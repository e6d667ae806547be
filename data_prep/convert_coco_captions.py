#!/usr/bin/env python
"""COCO captions -> mmpeft caption shards (one sample per image, all reference captions kept for evaluation).

Input: the official ``captions_{train,val}{2014,2017}.json`` (``images`` with ``id``/``file_name``, ``annotations``
with ``image_id``/``caption``), images under ``--image-root``. Optionally the Karpathy split file
(``dataset_coco.json``) selects one split (``restval`` counts as ``train``).

    python data_prep/convert_coco_captions.py --annotations captions_val2014.json --image-root val2014 \
        --karpathy dataset_coco.json --split test --out shards/coco_karpathy_test

Each sample: user ``<image>`` + ``--prompt``, assistant = one reference caption (``--captions-per-image all``
writes one training sample per caption instead), ``eval.captions`` = every reference, ``eval.image_id``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args

DEFAULT_PROMPT = "Describe the image briefly."


def load_items(annotations: Path, karpathy: Path | None, split: str | None, per_image: str) -> list[dict[str, Any]]:
    coco = json.loads(annotations.read_text())
    for key in ("images", "annotations"):
        if key not in coco:
            raise SystemExit(f"{annotations}: missing '{key}'; expected a COCO captions_*.json file")
    captions: dict[int, list[str]] = defaultdict(list)
    for ann in coco["annotations"]:
        captions[ann["image_id"]].append(ann["caption"].strip())
    images = sorted(coco["images"], key=lambda im: im["id"])
    if karpathy is not None:
        if split is None:
            raise SystemExit("--karpathy needs --split (train, val or test)")
        wanted = {im["cocoid"] for im in json.loads(karpathy.read_text())["images"]
                  if (im["split"] if im["split"] != "restval" else "train") == split}
        images = [im for im in images if im["id"] in wanted]
    items = []
    for im in images:
        refs = captions.get(im["id"], [])
        targets = refs if per_image == "all" else refs[:1]
        for n, target in enumerate(targets or [None]):
            items.append({"image_id": im["id"], "file_name": im["file_name"], "target": target, "refs": refs, "n": n})
    return items


def make_prepare(image_root: Path, prompt: str, source: str, annotations: Path):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        where = f"{annotations.name} image_id={item['image_id']}"
        if item["target"] is None:
            raise SampleError("no_assistant_turn", "image has no caption annotation", where)
        data, ext = read_image_file(image_root / item["file_name"], where)
        turns = [{"role": "user", "content": f"{IMAGE_MARKER}\n{prompt}"},
                 {"role": "assistant", "content": item["target"]}]
        record = make_record(f"coco-{item['image_id']}-{item['n']}", source, conversations=turns,
                             images=[image_field(0, ext)],
                             eval_fields={"captions": item["refs"], "image_id": item["image_id"]})
        return PreparedSample(key=f"{item['image_id']:012d}_{item['n']}", record=record,
                              files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, type=Path, help="COCO captions_*.json")
    parser.add_argument("--image-root", required=True, type=Path, help="directory holding the file_name images")
    parser.add_argument("--karpathy", type=Path, help="optional Karpathy split file (dataset_coco.json)")
    parser.add_argument("--split", choices=["train", "val", "test"], help="Karpathy split to keep")
    parser.add_argument("--captions-per-image", choices=["1", "all"], default="1",
                        help="1: one sample per image (first caption as target); all: one per caption")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="instruction after the image")
    parser.add_argument("--source", default="coco_captions", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = load_items(args.annotations, args.karpathy, args.split, args.captions_per_image)
    return write_shards_from_args(args, items, make_prepare(args.image_root, args.prompt, args.source,
                                                            args.annotations),
                                  description=f"COCO captions {args.annotations.name}")


if __name__ == "__main__":
    main()
