#!/usr/bin/env python
"""LLaVA conversation JSON -> mmpeft webdataset shards, with the image marker where LLaVA's training puts it.

Reads the LLaVA-Instruct-150K / llava_v1_5_mix665k shape: a JSON list of
``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value": ...}]}``; ``<image>`` marks the image, records
without ``image`` are text-only. Image paths are relative to ``--image-root``.

    python data_prep/convert_llava.py --json llava_v1_5_mix665k.json --image-root data/ --out shards/llava665k

What LLaVA does with a record (read from haotian-liu/LLaVA ``llava/train/train.py`` at
c121f0432da27facab705978f83c4ada465e46fd: ``LazySupervisedDataset.__getitem__``, ``preprocess_multimodal``,
``preprocess_v1``; and ``llava/model/llava_arch.py``), and what this converter does:

- Placement (``--image-placement llava``, the default). For records with ``image``, every turn that holds
  ``<image>`` (any role) becomes ``<image>\\n`` + the turn with every ``<image>`` removed and the ends stripped, then
  stripped again: ``"Describe.\\n<image>"`` -> ``"<image>\\nDescribe."``; ``"What is <image> this? "`` ->
  ``"<image>\\nWhat is  this?"`` (inner text untouched, double space included); ``"<image>What"`` ->
  ``"<image>\\nWhat"``; several markers in one turn collapse to one. Turns without the marker are not touched (not
  even stripped), nor are text-only records. A list ``image`` (several images) is LLaVA-NeXT's format, which
  v1.5 cannot load; there we follow LLaVA-VL/LLaVA-NeXT ``llava/train/train.py`` (at
  df179663ae8b83207df100a1f7af24caec633ff9): only a turn with exactly one marker that does not already start
  with it is moved, so interleaved markers stay in order. ``--image-placement original`` keeps the JSON's text.
  The manifest counts moved records under ``changed.image_marker_moved``.
- Not reproduced: ``mm_use_im_start_end`` and the ``mmtag`` templates wrap the marker in model-specific tokens;
  mmpeft's ``ChatRenderer`` owns the image tokens, so the shards keep the bare marker.
- A record with an image but no ``<image>`` anywhere: LLaVA loads the image yet never shows it (llava_arch
  splices image features only at markers), i.e. it trains on the text alone. Such rows are skipped as
  ``image_marker`` (counted) rather than stored as text-only rows about an unseen picture.
- Turns: LLaVA maps ``human``/``gpt`` to its roles, drops the first turn when it is not from ``human``
  (counted here as ``changed.leading_assistant_turn_dropped``), then asserts strict human/gpt alternation (it may
  end on a human turn). The schema checks the same order (``bad_turn_order`` skips). mmpeft also accepts
  ``user``/``assistant`` and one leading ``system`` turn, which LLaVA's code rejects (KeyError).
- Ids: the stored ``id`` is ``str(id)`` (LLaVA ids are strings or numbers); the original JSON value is kept in
  ``eval.source_id`` so it round-trips. A record without an id gets ``{json stem}-{index}`` and no source_id.

One bad record is one counted skip naming the file, index and id: not an object, ``conversations`` missing or not
a list, a turn without a known ``from`` or a string ``value``, ``image`` not a path or list of paths
(``malformed_json``), missing / corrupt / oversized image, no assistant turn, marker/image mismatch, bad turn
order. ``--strict`` stops at the first. A file that is not valid JSON is a whole-file error naming line and column.
A rerun resumes only an output made with the same options and input bytes (see ``--overwrite``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.llava_records import PLACEMENTS, llava_turns, place_marker, record_id  # noqa: F401 - re-exported
from mmpeft.data.schema import image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import load_json_file


def load_records(path: Path) -> list[Any]:
    data = load_json_file(path, "a JSON list of LLaVA records")
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a JSON list of records with 'conversations', got {type(data).__name__}")
    return data


def make_prepare(json_path: Path, image_root: Path, source: str, placement: str = "llava"):
    def prepare(item: tuple[int, Any]) -> PreparedSample:
        index, rec = item
        read = llava_turns(rec, f"{json_path.stem}-{index}", f"{json_path.name}[{index}]", placement)
        where = f"{json_path.name}[{index}] id={rec.get('id')!r}"
        files = {}
        for i, rel in enumerate(read.image_paths):
            data, ext = read_image_file(image_root / rel, where)
            files[image_field(i, ext)] = data
        record = make_record(read.sample_id, source, conversations=read.turns, images=list(files),
                             eval_fields=read.eval_fields, where=where)
        return PreparedSample(key=f"{index:09d}", record=record, files=files, changes=read.changes)

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path, help="LLaVA conversation JSON (a list of records)")
    parser.add_argument("--image-root", required=True, type=Path, help="directory the 'image' paths are relative to")
    parser.add_argument("--image-placement", choices=PLACEMENTS, default="llava",
                        help="llava: move <image> to the start of its turn as LLaVA's training does (default); "
                             "original: keep the JSON's text as it is")
    parser.add_argument("--source", default="llava", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = list(enumerate(load_records(args.json)))
    return write_shards_from_args(
        args, items, make_prepare(args.json, args.image_root, args.source, args.image_placement),
        description=f"LLaVA {args.json.name}", converter="convert_llava",
        options={"image_root": str(args.image_root.resolve()), "image_placement": args.image_placement,
                 "source": args.source},
        inputs={"json": args.json})


if __name__ == "__main__":
    main()
