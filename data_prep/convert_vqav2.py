#!/usr/bin/env python
"""VQAv2 -> mmpeft VQA shards keeping all 10 answers, the question type and the answer type.

Input: ``v2_OpenEnded_mscoco_{split}_questions.json`` + ``v2_mscoco_{split}_annotations.json`` and the COCO images
(``COCO_{data_subtype}_{image_id:012d}.jpg`` under ``--image-root``; ``--image-pattern`` overrides).

    python data_prep/convert_vqav2.py --questions v2_OpenEnded_mscoco_val2014_questions.json \
        --annotations v2_mscoco_val2014_annotations.json --image-root val2014 --out shards/vqav2_val

Each sample: user ``<image>`` + question + ``--prompt-suffix`` (LLaVA-1.5's short-answer instruction), assistant =
``multiple_choice_answer``; ``eval`` = answers (10), question_id, question_type, answer_type, image_id.

One bad entry is one counted skip naming the file and its index, never the run: a question without integer
``question_id`` / ``image_id`` and a string ``question`` (or repeating a question_id), an annotation without an
integer ``question_id`` naming a listed question (or repeating one), an annotation whose ``answers`` are not
``{"answer": str}`` objects or whose ``multiple_choice_answer`` / types are not strings (``malformed_json``);
a question without answers (``no_answers``); a missing, corrupt or oversized image. Bad entries are counted after
the good items. A file that is not valid JSON is a whole-file error naming line and column. A rerun resumes only an
output made with the same options and input bytes (see ``--overwrite``).
"""

from __future__ import annotations

import argparse
import reprlib
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import load_json_file

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_items(questions: Path, annotations: Path) -> tuple[list[dict[str, Any] | SampleError], str]:
    """One item per question, sorted by question_id, then one ``SampleError`` per bad entry; and the data_subtype."""
    qs = load_json_file(questions, "v2_OpenEnded_mscoco_*_questions.json")
    anns = load_json_file(annotations, "v2_mscoco_*_annotations.json")
    if not isinstance(qs, dict) or not isinstance(qs.get("questions"), list):
        raise SystemExit(f"{questions}: no 'questions' list; expected v2_OpenEnded_mscoco_*_questions.json")
    if not isinstance(anns, dict) or not isinstance(anns.get("annotations"), list):
        raise SystemExit(f"{annotations}: no 'annotations' list; expected v2_mscoco_*_annotations.json")
    subtype = qs.get("data_subtype", "")
    if not isinstance(subtype, str):
        raise SystemExit(f"{questions}: 'data_subtype' must be a string such as 'val2014', not {subtype!r}")
    bad: list[SampleError] = []
    by_qid: dict[int, dict[str, Any]] = {}
    for i, q in enumerate(qs["questions"]):
        if not isinstance(q, dict) or not is_id(q.get("question_id")) or not is_id(q.get("image_id")) \
                or not isinstance(q.get("question"), str) or q["question_id"] in by_qid:
            bad.append(SampleError("malformed_json", f"question {reprlib.repr(q)} needs integer 'question_id' (not "
                                   "seen before) and 'image_id' and a string 'question'", f"{questions.name} "
                                   f"questions[{i}]"))
            continue
        by_qid[q["question_id"]] = {"q": q, "a": None, "where": f"{questions.name} questions[{i}]"}
    for i, a in enumerate(anns["annotations"]):
        item = by_qid.get(a.get("question_id")) if isinstance(a, dict) and is_id(a.get("question_id")) else None
        if item is None or item["a"] is not None:
            bad.append(SampleError("malformed_json", f"annotation {reprlib.repr(a)} needs an integer 'question_id' "
                                   "of a listed question, annotated once", f"{annotations.name} annotations[{i}]"))
            continue
        item["a"], item["where"] = a, f"{annotations.name} annotations[{i}]"
    return [by_qid[k] for k in sorted(by_qid)] + bad, subtype


def check_annotation(a: dict[str, Any], where: str) -> list[str]:
    """The annotators' answers of a well-formed annotation; else ``malformed_json`` / ``no_answers``."""
    answers = a.get("answers")
    if not isinstance(answers, list) or not all(isinstance(x, dict) and isinstance(x.get("answer"), str)
                                                for x in answers):
        raise SampleError("malformed_json", f"'answers' must be a list of {{'answer': str}}, not "
                          f"{reprlib.repr(answers)}", where)
    if not answers:
        raise SampleError("no_answers", "annotation has an empty 'answers' list", where)
    for key in ("multiple_choice_answer", "question_type", "answer_type"):
        if not isinstance(a.get(key, ""), str) or (key == "multiple_choice_answer" and key not in a):
            raise SampleError("malformed_json", f"{key!r} must be a string, not {reprlib.repr(a.get(key))}", where)
    return [x["answer"] for x in answers]


def make_prepare(image_root: Path, pattern: str, subtype: str, suffix: str, source: str, questions: Path):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        q, a = item["q"], item["a"]
        where = f"{item['where']} question_id={q['question_id']}"
        if a is None:
            raise SampleError("no_answers", "question has no annotation with answers", where)
        answers = check_annotation(a, where)
        path = image_root / pattern.format(subtype=subtype, image_id=q["image_id"])
        data, ext = read_image_file(path, where)
        turns = [{"role": "user", "content": f"{IMAGE_MARKER}\n{q['question']}{suffix}"},
                 {"role": "assistant", "content": a["multiple_choice_answer"]}]
        record = make_record(
            f"vqav2-{q['question_id']}", source, conversations=turns, images=[image_field(0, ext)],
            eval_fields={"answers": answers, "question_id": q["question_id"], "image_id": q["image_id"],
                         "question_type": a.get("question_type", ""), "answer_type": a.get("answer_type", "")},
            where=where,
        )
        return PreparedSample(key=f"{q['question_id']:012d}", record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, type=Path, help="v2_OpenEnded_mscoco_*_questions.json")
    parser.add_argument("--annotations", required=True, type=Path, help="v2_mscoco_*_annotations.json")
    parser.add_argument("--image-root", required=True, type=Path, help="directory of the COCO images")
    parser.add_argument("--image-pattern", default="COCO_{subtype}_{image_id:012d}.jpg",
                        help="image file name; fields {subtype} (the questions' data_subtype) and {image_id}")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question")
    parser.add_argument("--source", default="vqav2", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.image_pattern.format(subtype="val2014", image_id=1)
    except (KeyError, IndexError, ValueError) as e:
        raise SystemExit(f"--image-pattern {args.image_pattern!r}: {e!r}; it may use only {{subtype}} and "
                         "{image_id} (e.g. 'COCO_{subtype}_{image_id:012d}.jpg')") from e
    items, subtype = load_items(args.questions, args.annotations)
    prepare = make_prepare(args.image_root, args.image_pattern, subtype, args.prompt_suffix, args.source,
                           args.questions)
    return write_shards_from_args(
        args, items, prepare, description=f"VQAv2 {args.questions.name}", converter="convert_vqav2",
        options={"image_root": str(args.image_root.resolve()), "image_pattern": args.image_pattern,
                 "prompt_suffix": args.prompt_suffix, "source": args.source},
        inputs={"questions": args.questions, "annotations": args.annotations})


if __name__ == "__main__":
    main()
