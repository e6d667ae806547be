#!/usr/bin/env python
"""VQAv2 -> mmpeft VQA shards keeping all 10 answers, the question type and the answer type.

Input: ``v2_OpenEnded_mscoco_{split}_questions.json`` + ``v2_mscoco_{split}_annotations.json`` and the COCO images
(``COCO_{data_subtype}_{image_id:012d}.jpg`` under ``--image-root``; ``--image-pattern`` overrides).

    python data_prep/convert_vqav2.py --questions v2_OpenEnded_mscoco_val2014_questions.json \
        --annotations v2_mscoco_val2014_annotations.json --image-root val2014 --out shards/vqav2_val

Each sample: user ``<image>`` + question + ``--prompt-suffix`` (LLaVA-1.5's short-answer instruction), assistant =
``multiple_choice_answer``; ``eval`` = answers (10), question_id, question_type, answer_type, image_id.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."


def load_items(questions: Path, annotations: Path) -> tuple[list[dict[str, Any]], str]:
    qs = json.loads(questions.read_text())
    anns = json.loads(annotations.read_text())
    if "questions" not in qs:
        raise SystemExit(f"{questions}: missing 'questions'; expected v2_OpenEnded_mscoco_*_questions.json")
    if "annotations" not in anns:
        raise SystemExit(f"{annotations}: missing 'annotations'; expected v2_mscoco_*_annotations.json")
    by_qid = {a["question_id"]: a for a in anns["annotations"]}
    ordered = sorted(qs["questions"], key=lambda q: q["question_id"])
    items = [{"q": q, "a": by_qid.get(q["question_id"])} for q in ordered]
    return items, qs.get("data_subtype", "")


def make_prepare(image_root: Path, pattern: str, subtype: str, suffix: str, source: str, questions: Path):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        q, a = item["q"], item["a"]
        where = f"{questions.name} question_id={q.get('question_id')}"
        if a is None or not a.get("answers"):
            raise SampleError("no_answers", "question has no annotation with answers", where)
        answers = [x["answer"] for x in a["answers"]]
        path = image_root / pattern.format(subtype=subtype, image_id=q["image_id"])
        data, ext = read_image_file(path, where)
        turns = [{"role": "user", "content": f"{IMAGE_MARKER}\n{q['question']}{suffix}"},
                 {"role": "assistant", "content": a["multiple_choice_answer"]}]
        record = make_record(
            f"vqav2-{q['question_id']}", source, conversations=turns, images=[image_field(0, ext)],
            eval_fields={"answers": answers, "question_id": q["question_id"], "image_id": q["image_id"],
                         "question_type": a.get("question_type", ""), "answer_type": a.get("answer_type", "")},
        )
        return PreparedSample(key=f"{q['question_id']:012d}", record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, type=Path, help="v2_OpenEnded_mscoco_*_questions.json")
    parser.add_argument("--annotations", required=True, type=Path, help="v2_mscoco_*_annotations.json")
    parser.add_argument("--image-root", required=True, type=Path, help="directory of the COCO images")
    parser.add_argument("--image-pattern", default="COCO_{subtype}_{image_id:012d}.jpg",
                        help="image file name; fields {subtype} (the questions' data_subtype) and {image_id}")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question")
    parser.add_argument("--source", default="vqav2", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items, subtype = load_items(args.questions, args.annotations)
    prepare = make_prepare(args.image_root, args.image_pattern, subtype, args.prompt_suffix, args.source,
                           args.questions)
    return write_shards_from_args(args, items, prepare, description=f"VQAv2 {args.questions.name}")


if __name__ == "__main__":
    main()
