#!/usr/bin/env python
"""ScienceQA -> mmpeft eval shards of ScienceQA-IMG (the problems of a split that have an image), with
lmms-eval's ``scienceqa_img`` prompt.

Input (lupantech/ScienceQA's release): ``problems.json`` (``{pid: {"question", "choices", "answer" (index), "hint",
"image" ("image.png" or null), "subject", "grade", ...}}``), ``pid_splits.json`` (``{split: [pid, ...]}``) and the
images ``images/<split>/<pid>/<image>`` (``--image-root`` is the ``images`` directory).

    python data_prep/convert_scienceqa.py --problems problems.json --pid-splits pid_splits.json \
        --image-root images --split test --out shards/scienceqa_img_test

The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf, ``lmms_eval/tasks/scienceqa/utils.py``
``sqa_doc_to_text``, ``format: default`` with ``scienceqa_img.yaml``'s kwargs), after the image marker as its llava
model places it: ``<image>\\n`` + (``Context: {hint}\\n`` when the hint is not empty) + question + ``\\n`` + the
choices as ``A. ...`` lines joined by ``\\n`` + ``--prompt-suffix``. The assistant turn is the answer's letter.
``eval``: answer (index), choices, question_id (the pid), subject, grade, hint.

Problems of the split without an image are left out (ScienceQA-IMG; the count is recorded in the manifest,
``fingerprint.options.selection``). One bad entry is one counted skip naming the file and pid: a pid of the split
missing from problems.json, a problem without a string question and hint, a non-empty list of string choices and an
integer answer indexing them (``malformed_json``), a missing, corrupt or oversized image.
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

DEFAULT_SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def well_formed(p: Any) -> bool:
    if not isinstance(p, dict) or not isinstance(p.get("question"), str) or not isinstance(p.get("hint", ""), str):
        return False
    choices, answer = p.get("choices"), p.get("answer")
    return (isinstance(choices, list) and bool(choices) and all(isinstance(c, str) for c in choices)
            and isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices))


def load_items(problems: Path, pid_splits: Path, split: str) -> tuple[list[dict[str, Any] | SampleError], dict]:
    """One item per problem of ``split`` with an image, in the split's order, then one ``SampleError`` per bad
    entry; and the selection counts (``kept``, ``no_image`` left out)."""
    probs = load_json_file(problems, "ScienceQA problems.json ({pid: {...}})")
    splits = load_json_file(pid_splits, "ScienceQA pid_splits.json ({split: [pid, ...]})")
    if not isinstance(probs, dict):
        raise SystemExit(f"{problems}: not a JSON object of problems; expected ScienceQA's problems.json")
    if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
        known = sorted(splits) if isinstance(splits, dict) else []
        raise SystemExit(f"{pid_splits}: no list of pids for --split {split!r} (splits there: {known})")
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    left_out = 0
    for i, pid in enumerate(splits[split]):
        where = f"{pid_splits.name} {split}[{i}] pid={pid!r}"
        p = probs.get(pid) if isinstance(pid, str) else None
        image = p.get("image") if isinstance(p, dict) else None
        if not well_formed(p) or (image is not None and (not isinstance(image, str) or Path(image).name != image
                                                         or image in ("", ".", ".."))):
            bad.append(SampleError("malformed_json", f"problem {reprlib.repr(p)} (in {problems.name}) needs a string "
                                   "'question' and 'hint', a non-empty list of string 'choices', an integer "
                                   "'answer' indexing them and 'image' a plain file name or null", where))
            continue
        if not p.get("image"):
            left_out += 1
            continue
        items.append({"pid": pid, "p": p, "where": where})
    return items + bad, {"kept": len(items), "no_image": left_out}


def prompt(p: dict[str, Any], suffix: str) -> str:
    """lmms-eval's ``sqa_doc_to_text`` (default format) after the image marker (module docstring)."""
    choices = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(p["choices"]))
    context = f"Context: {p['hint']}\n" if p.get("hint") else ""
    return f"{IMAGE_MARKER}\n{context}{p['question']}\n{choices}{suffix}"


def make_prepare(image_root: Path, split: str, suffix: str, source: str):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        pid, p, where = item["pid"], item["p"], item["where"]
        key = check_key(pid, where)
        data, ext = read_image_file(image_root / split / pid / p["image"], where)
        turns = [{"role": "user", "content": prompt(p, suffix)},
                 {"role": "assistant", "content": chr(ord("A") + p["answer"])}]
        eval_fields = {"answer": p["answer"], "choices": list(p["choices"]), "question_id": pid,
                       "hint": p.get("hint", "")}
        eval_fields.update({k: p[k] for k in ("subject", "grade") if isinstance(p.get(k), str)})
        record = make_record(f"scienceqa-{pid}", source, conversations=turns, images=[image_field(0, ext)],
                             eval_fields=eval_fields, where=where)
        return PreparedSample(key=key, record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", required=True, type=Path, help="problems.json")
    parser.add_argument("--pid-splits", required=True, type=Path, help="pid_splits.json")
    parser.add_argument("--image-root", required=True, type=Path, help="the images directory (<split>/<pid>/...)")
    parser.add_argument("--split", default="test", help="split of pid_splits.json (default test, lmms-eval's)")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the choices (lmms-eval's "
                        "default post_prompt)")
    parser.add_argument("--source", default="scienceqa_img", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items, selection = load_items(args.problems, args.pid_splits, args.split)
    print(f"{args.pid_splits} {args.split}: {selection['kept']} problem(s) with an image, {selection['no_image']} "
          "without left out (ScienceQA-IMG)")
    return write_shards_from_args(
        args, items, make_prepare(args.image_root, args.split, args.prompt_suffix, args.source),
        description=f"ScienceQA-IMG {args.split}", converter="convert_scienceqa",
        options={"image_root": str(args.image_root.resolve()), "split": args.split,
                 "prompt_suffix": args.prompt_suffix, "source": args.source, "selection": selection},
        inputs={"problems": args.problems, "pid_splits": args.pid_splits})


if __name__ == "__main__":
    main()
