#!/usr/bin/env python
"""COCO captions -> mmpeft caption shards (one sample per image, all reference captions kept for evaluation).

Input: the official ``captions_{train,val}{2014,2017}.json`` (``images`` with ``id``/``file_name``, ``annotations``
with ``image_id``/``caption``), images under ``--image-root``. Optionally the Karpathy split file
(``dataset_coco.json``) selects one split (``restval`` counts as ``train``).

    python data_prep/convert_coco_captions.py --annotations captions_val2014.json --image-root val2014 \
        --karpathy dataset_coco.json --split test --out shards/coco_karpathy_test

Each sample: user ``<image>`` + ``--prompt``, assistant = one reference caption (``--captions-per-image all``
writes one training sample per caption instead), ``eval.captions`` = every reference, ``eval.image_id``.

One bad entry is one counted ``malformed_json`` skip naming the file and its index, never the run: an ``images``
entry without an integer ``id`` and a ``file_name`` (or repeating an id), an annotation without an integer
``image_id`` and a string ``caption`` (or naming an image that ``images`` does not list), a Karpathy entry without
an integer ``cocoid`` and a string ``split``. These are counted in every conversion that reads the file, whatever
the split, after the good items. An image without captions is ``no_assistant_turn``; a missing, corrupt or
oversized image file is ``missing_image`` / ``corrupt_image`` / ``image_too_large``. A file that is not valid JSON
is a whole-file error naming line and column. A rerun resumes only an output made with the same options and input
bytes (see ``--overwrite``).
"""

from __future__ import annotations

import argparse
import reprlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import load_json_file

DEFAULT_PROMPT = "Describe the image briefly."


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_items(annotations: Path, karpathy: Path | None, split: str | None,
               per_image: str) -> list[dict[str, Any] | SampleError]:
    """One item per sample (image, or image x caption), sorted by image id, then one ``SampleError`` per bad entry."""
    if karpathy is not None and split is None:
        raise SystemExit("--karpathy needs --split (train, val or test)")
    coco = load_json_file(annotations, "a COCO captions_*.json object")
    for key in ("images", "annotations"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise SystemExit(f"{annotations}: no '{key}' list; expected a COCO captions_*.json file")
    bad: list[SampleError] = []
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or not is_id(im.get("id")) or not isinstance(im.get("file_name"), str) \
                or not im["file_name"] or im["id"] in images:
            bad.append(SampleError("malformed_json", f"image entry {reprlib.repr(im)} needs an integer 'id' (not seen "
                                   "before) and a 'file_name'", f"{annotations.name} images[{i}]"))
            continue
        images[im["id"]] = im
    captions: dict[int, list[str]] = defaultdict(list)
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or not is_id(ann.get("image_id")) or not isinstance(ann.get("caption"), str) \
                or ann["image_id"] not in images:
            bad.append(SampleError("malformed_json", f"annotation {reprlib.repr(ann)} needs an integer 'image_id' "
                                   "listed in 'images' and a string 'caption'", f"{annotations.name} annotations[{i}]"))
            continue
        captions[ann["image_id"]].append(ann["caption"].strip())
    kept = [images[k] for k in sorted(images)]
    if karpathy is not None:
        split_file = load_json_file(karpathy, "the Karpathy split file dataset_coco.json")
        if not isinstance(split_file, dict) or not isinstance(split_file.get("images"), list):
            raise SystemExit(f"{karpathy}: no 'images' list; expected the Karpathy split file dataset_coco.json")
        wanted = set()
        for i, im in enumerate(split_file["images"]):
            if not isinstance(im, dict) or not is_id(im.get("cocoid")) or not isinstance(im.get("split"), str):
                bad.append(SampleError("malformed_json", f"entry {reprlib.repr(im)} needs an integer 'cocoid' and a "
                                       "string 'split'", f"{karpathy.name} images[{i}]"))
            elif (im["split"] if im["split"] != "restval" else "train") == split:
                wanted.add(im["cocoid"])
        kept = [im for im in kept if im["id"] in wanted]
    items: list[dict[str, Any] | SampleError] = []
    for im in kept:
        refs = captions.get(im["id"], [])
        targets = refs if per_image == "all" else refs[:1]
        for n, target in enumerate(targets or [None]):
            items.append({"image_id": im["id"], "file_name": im["file_name"], "target": target, "refs": refs, "n": n})
    return items + bad


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
                             eval_fields={"captions": item["refs"], "image_id": item["image_id"]}, where=where)
        return PreparedSample(key=f"{item['image_id']:012d}_{item['n']}", record=record,
                              files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return write_shards_from_args(
        args, items, make_prepare(args.image_root, args.prompt, args.source, args.annotations),
        description=f"COCO captions {args.annotations.name}", converter="convert_coco_captions",
        options={"image_root": str(args.image_root.resolve()), "split": args.split, "prompt": args.prompt,
                 "captions_per_image": args.captions_per_image, "source": args.source},
        inputs={"annotations": args.annotations, "karpathy": args.karpathy})


if __name__ == "__main__":
    main()
