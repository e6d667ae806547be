#!/usr/bin/env python
"""TextVQA -> mmpeft eval shards with lmms-eval's ``textvqa_val`` prompt and all annotator answers.

Input: ``TextVQA_0.5.1_val.json`` (``{"data": [{"question_id": int, "image_id": str, "question": str,
"answers": [10 str], ...}]}``) and its images (``train_images/{image_id}.jpg``: the val questions use train images;
``--image-pattern`` overrides). With ``--ocr``, also the OCR tokens (``ocr_tokens`` of each question, else of its
image in ``--ocr-file``, e.g. ``TextVQA_Rosetta_OCR_v0.2_val.json``: ``{"data": [{"image_id", "ocr_tokens"}]}``).

    python data_prep/convert_textvqa.py --questions TextVQA_0.5.1_val.json --image-root train_images \
        --out shards/textvqa_val

The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf, ``lmms_eval/tasks/textvqa/utils.py``
``textvqa_doc_to_text`` with the default kwargs of ``_default_template_textvqa_yaml``), after the image marker as its
llava model places it: ``<image>\\n`` + ``question.capitalize()`` (sic: the rest of the question is lower-cased) +
(``--ocr``: ``\\nReference OCR token: `` + the tokens joined by ``", "``) + ``--prompt-suffix``. The assistant turn is
the most frequent annotator answer (the first of those tied). ``eval``: answers, question_id, image_id.

One bad entry is one counted skip naming the file and its index: an entry without an integer ``question_id`` (or
repeating one), a string ``image_id`` and ``question``, or answers that are a list of strings (``malformed_json``);
an empty answer list (``no_answers``: the test split has none, it cannot be scored); with ``--ocr``, an image without
OCR tokens (``malformed_json``); a missing, corrupt or oversized image.
"""

from __future__ import annotations

import argparse
import reprlib
from collections import Counter
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, check_key, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.data.source_files import load_json_file

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_ocr(path: Path | None) -> dict[str, list[str]]:
    """image_id -> OCR tokens of ``--ocr-file`` (empty without one)."""
    if path is None:
        return {}
    data = load_json_file(path, "TextVQA_Rosetta_OCR_*.json ({'data': [{'image_id', 'ocr_tokens'}]})")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SystemExit(f"{path}: no 'data' list; expected TextVQA_Rosetta_OCR_*.json")
    return {e["image_id"]: e["ocr_tokens"] for e in data["data"]
            if isinstance(e, dict) and isinstance(e.get("image_id"), str) and isinstance(e.get("ocr_tokens"), list)}


def load_items(questions: Path) -> list[dict[str, Any] | SampleError]:
    """One item per well-formed entry in file order, then one ``SampleError`` per malformed one."""
    data = load_json_file(questions, "TextVQA_0.5.1_*.json ({'data': [...]})")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SystemExit(f"{questions}: no 'data' list; expected TextVQA_0.5.1_val.json")
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    seen: set[int] = set()
    for i, q in enumerate(data["data"]):
        where = f"{questions.name} data[{i}]"
        answers = q.get("answers") if isinstance(q, dict) else None
        if not isinstance(q, dict) or not is_id(q.get("question_id")) or q["question_id"] in seen \
                or not isinstance(q.get("image_id"), str) or not isinstance(q.get("question"), str) \
                or not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            bad.append(SampleError("malformed_json", f"entry {reprlib.repr(q)} needs an integer 'question_id' (not "
                                   "seen before), string 'image_id' and 'question', and 'answers' as a list of "
                                   "strings", where))
            continue
        seen.add(q["question_id"])
        items.append({"q": q, "where": f"{where} question_id={q['question_id']}"})
    return items + bad


def prompt(question: str, suffix: str, ocr_tokens: list[str] | None) -> str:
    """lmms-eval's ``textvqa_doc_to_text`` after the image marker (module docstring)."""
    ocr = f"\nReference OCR token: {', '.join(ocr_tokens)}" if ocr_tokens is not None else ""
    return f"{IMAGE_MARKER}\n{question.capitalize()}{ocr}{suffix}"


def make_prepare(image_root: Path, pattern: str, suffix: str, source: str, ocr: bool, ocr_by_image: dict):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        q, where = item["q"], item["where"]
        if not q["answers"]:
            raise SampleError("no_answers", "question has no annotator answers (a test-split entry?)", where)
        tokens = None
        if ocr:
            tokens = q.get("ocr_tokens", ocr_by_image.get(q["image_id"]))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise SampleError("malformed_json", f"no OCR tokens for image {q['image_id']!r}: give --ocr-file "
                                  "(TextVQA_Rosetta_OCR_v0.2_val.json) or drop --ocr", where)
        check_key(q["image_id"], where)  # it names a file under --image-root: no dots or slashes
        data, ext = read_image_file(image_root / pattern.format(image_id=q["image_id"]), where)
        target = Counter(q["answers"]).most_common(1)[0][0]  # ties: the first seen, as Counter keeps order
        turns = [{"role": "user", "content": prompt(q["question"], suffix, tokens)},
                 {"role": "assistant", "content": target}]
        record = make_record(
            f"textvqa-{q['question_id']}", source, conversations=turns, images=[image_field(0, ext)],
            eval_fields={"answers": list(q["answers"]), "question_id": q["question_id"], "image_id": q["image_id"]},
            where=where)
        return PreparedSample(key=f"{q['question_id']:09d}", record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", required=True, type=Path, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--image-root", required=True, type=Path, help="directory of the images (train_images)")
    parser.add_argument("--image-pattern", default="{image_id}.jpg", help="image file name; field {image_id}")
    parser.add_argument("--ocr", action="store_true",
                        help="lmms-eval's OCR variant: add '\\nReference OCR token: ...' after the question")
    parser.add_argument("--ocr-file", type=Path, help="TextVQA_Rosetta_OCR_v0.2_val.json, for --ocr")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question (lmms-eval's "
                        "default post_prompt)")
    parser.add_argument("--source", default="textvqa", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.image_pattern.format(image_id="x")
    except (KeyError, IndexError, ValueError) as e:
        raise SystemExit(f"--image-pattern {args.image_pattern!r}: {e!r}; it may use only {{image_id}}") from e
    if args.ocr_file is not None and not args.ocr:
        raise SystemExit("--ocr-file is read only with --ocr (lmms-eval's OCR-token prompt); add --ocr or drop it")
    items = load_items(args.questions)
    prepare = make_prepare(args.image_root, args.image_pattern, args.prompt_suffix, args.source, args.ocr,
                           load_ocr(args.ocr_file))
    return write_shards_from_args(
        args, items, prepare, description=f"TextVQA {args.questions.name}", converter="convert_textvqa",
        options={"image_root": str(args.image_root.resolve()), "image_pattern": args.image_pattern, "ocr": args.ocr,
                 "prompt_suffix": args.prompt_suffix, "source": args.source},
        inputs={"questions": args.questions, "ocr_file": args.ocr_file})


if __name__ == "__main__":
    main()
