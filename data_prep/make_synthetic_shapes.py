#!/usr/bin/env python
"""Generate the synthetic shapes benchmark (captions + five typed VQA question kinds, VQAv2 answer form).

    python data_prep/make_synthetic_shapes.py --out shards/shapes --seed 0 --train-scenes 2000

Writes train/, val_vqa/, val_captions/, test_vqa/, test_captions/ (shards + manifest each) and baselines.json
(majority answer per question type from the training split, and a constant caption). Deterministic by seed.
See mmpeft/data/synthetic.py for the scene and question definitions.

A rerun resumes only into an output drawn with the same options (recorded in ``--out/fingerprint.json`` before any
shard); with other options it refuses, naming each difference. ``--overwrite`` deletes the old shards first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmpeft.data.shards import OutputMismatch, claim_output
from mmpeft.data.synthetic import write_benchmark

SPLITS = ("train", "val_vqa", "val_captions", "test_vqa", "test_captions")  # the subdirectories write_benchmark fills


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--eval-scenes", type=int, default=150, help="scenes per val/test split")
    parser.add_argument("--questions-per-scene", type=int, default=2, help="training questions per scene")
    parser.add_argument("--eval-per-type", type=int, default=100, help="val/test questions per type")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--overwrite", action="store_true",
                        help="if --out holds a benchmark drawn with other options, delete its shards and redraw")
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("out", "overwrite")}
    try:
        claim_output(args.out, {"converter": "make_synthetic_shapes", "options": options}, overwrite=args.overwrite,
                     subdirs=SPLITS)
    except OutputMismatch as e:
        raise SystemExit(str(e)) from e
    if args.overwrite:  # baselines.json marks a finished benchmark (mmpeft.apps.demo reuses it)
        Path(args.out, "baselines.json").unlink(missing_ok=True)
    result = write_benchmark(args.out, seed=args.seed, train_scenes=args.train_scenes, eval_scenes=args.eval_scenes,
                             questions_per_scene=args.questions_per_scene, eval_per_type=args.eval_per_type,
                             image_size=args.image_size)
    assert sorted(result["manifests"]) == sorted(SPLITS), f"update SPLITS to {sorted(result['manifests'])}"
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
