#!/usr/bin/env python
"""GQA -> mmpeft eval shards with lmms-eval's ``gqa`` prompt, the gold answer and the question types.

Input: ``testdev_balanced_questions.json`` (``{question_id: {"imageId", "question", "answer", "isBalanced",
"types": {"structural", "semantic", ...}, ...}}``) and the GQA images (``images/{image_id}.jpg``;
``--image-pattern`` overrides).

    python data_prep/convert_gqa.py --questions testdev_balanced_questions.json --image-root images \
        --out shards/gqa_testdev_balanced

The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf, ``lmms_eval/tasks/gqa/utils.py``
``gqa_doc_to_text`` with ``gqa.yaml``'s default kwargs), after the image marker as its llava model places it:
``<image>\\n`` + question + ``--prompt-suffix``. The assistant turn is the gold ``answer``. ``eval``: answer,
question_id (the file's key, a string), image_id, structural_type, semantic_type.

The official ``eval.py`` scores only questions with ``isBalanced`` true; the others are left out unless
``--all-questions`` (the count left out is recorded in the manifest, ``fingerprint.options.selection``). One bad
entry is one counted skip naming the file and its key: an entry without string ``imageId``, ``question`` and
``answer`` or with non-string types (``malformed_json``), a question id unusable as a shard key (``bad_key``), a
missing, corrupt or oversized image.
"""

from __future__ import annotations

import argparse
import reprlib
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, check_key, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import load_json_file

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."


def load_items(questions: Path, all_questions: bool) -> tuple[list[dict[str, Any] | SampleError], dict[str, int]]:
    """One item per kept question in file order, then one ``SampleError`` per malformed entry; and the selection
    counts (``kept``, ``not_balanced`` left out)."""
    data = load_json_file(questions, "GQA *_questions.json ({question_id: {...}})")
    if not isinstance(data, dict):
        raise SystemExit(f"{questions}: not a JSON object of questions; expected testdev_balanced_questions.json")
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    left_out = 0
    for qid, q in data.items():
        where = f"{questions.name} [{qid!r}]"
        types = q.get("types", {}) if isinstance(q, dict) else None
        if not isinstance(q, dict) or not all(isinstance(q.get(k), str) for k in ("imageId", "question", "answer")) \
                or not isinstance(types, dict) or not all(isinstance(types.get(k, ""), str)
                                                          for k in ("structural", "semantic")):
            bad.append(SampleError("malformed_json", f"entry {reprlib.repr(q)} needs string 'imageId', 'question' "
                                   "and 'answer' (and string 'types.structural' / 'types.semantic')", where))
            continue
        if not all_questions and q.get("isBalanced") is not True:
            left_out += 1
            continue
        items.append({"qid": qid, "q": q, "where": where})
    return items + bad, {"kept": len(items), "not_balanced": left_out}


def make_prepare(image_root: Path, pattern: str, suffix: str, source: str):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        qid, q, where = item["qid"], item["q"], item["where"]
        key = check_key(qid, where)
        check_key(q["imageId"], where)  # it names a file under --image-root: no dots or slashes
        data, ext = read_image_file(image_root / pattern.format(image_id=q["imageId"]), where)
        turns = [{"role": "user", "content": f"{IMAGE_MARKER}\n{q['question']}{suffix}"},
                 {"role": "assistant", "content": q["answer"]}]
        types = q.get("types", {})
        record = make_record(
            f"gqa-{qid}", source, conversations=turns, images=[image_field(0, ext)],
            eval_fields={"answer": q["answer"], "question_id": qid, "image_id": q["imageId"],
                         "structural_type": types.get("structural", ""), "semantic_type": types.get("semantic", "")},
            where=where)
        return PreparedSample(key=key, record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, type=Path, help="testdev_balanced_questions.json")
    parser.add_argument("--image-root", required=True, type=Path, help="directory of the GQA images")
    parser.add_argument("--image-pattern", default="{image_id}.jpg", help="image file name; field {image_id}")
    parser.add_argument("--all-questions", action="store_true",
                        help="keep questions with isBalanced false too (eval.py scores only balanced ones)")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question (lmms-eval's "
                        "default post_prompt)")
    parser.add_argument("--source", default="gqa", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.image_pattern.format(image_id="x")
    except (KeyError, IndexError, ValueError) as e:
        raise SystemExit(f"--image-pattern {args.image_pattern!r}: {e!r}; it may use only {{image_id}}") from e
    items, selection = load_items(args.questions, args.all_questions)
    if selection["not_balanced"]:
        print(f"{args.questions}: left out {selection['not_balanced']} question(s) with isBalanced false "
              "(--all-questions keeps them)")
    return write_shards_from_args(
        args, items, make_prepare(args.image_root, args.image_pattern, args.prompt_suffix, args.source),
        description=f"GQA {args.questions.name}", converter="convert_gqa",
        options={"image_root": str(args.image_root.resolve()), "image_pattern": args.image_pattern,
                 "all_questions": args.all_questions, "prompt_suffix": args.prompt_suffix, "source": args.source,
                 "selection": selection},
        inputs={"questions": args.questions})


if __name__ == "__main__":
    main()
