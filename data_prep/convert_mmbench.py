#!/usr/bin/env python
"""MMBench TSV -> mmpeft eval shards (one record per row, option rotations included), with lmms-eval's
``mmbench_en`` prompt.

Input: an MMBench TSV as OpenCompass / VLMEvalKit distribute it (``MMBench_DEV_EN.tsv``, ...): columns ``index``,
``question``, ``hint``, ``A`` ``B`` ``C`` ``D`` (``E`` ...), ``answer``, ``category``, ``l2-category``, ``split``,
``image`` (base64; a short value is the ``index`` of the row whose image it shares, as VLMEvalKit resolves it). The
circular rotations are rows with ``index`` = question index + k * 1e6; a TSV without them gives one row per
question (circular evaluation then reduces to plain accuracy; the converter says so).

    python data_prep/convert_mmbench.py --tsv MMBench_DEV_EN.tsv --out shards/mmbench_dev_en

The TSV is read with ``pandas.read_csv(sep="\\t")`` as VLMEvalKit reads it (open-compass/VLMEvalKit e8e78f0,
``vlmeval/smp/file.py`` ``load``), so its missing-value strings (``""``, ``NaN``, ``None``, ``N/A``, ...) are
missing options or hints there and here. The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf,
``lmms_eval/tasks/mmbench/en_utils.py`` ``mmbench_doc_to_text`` and ``mmbench_evals.py``
``create_options_prompt``, ``sys_prompt`` ``There are several options:``), after the image marker as its llava
model places it: ``<image>\\n`` + (``{hint} `` when the hint is present) + ``{question} There are several
options:\\nA. ...\\nB. ...`` + ``\\n`` + ``--prompt-suffix`` (whose default starts with its own ``\\n``: lmms-eval
prompts a blank line before it). Options are the letters A-E present. ``eval``: index, answer (letter), options
(``{letter: text}`` of every option column present, VLMEvalKit's ``build_choices``), category, l2_category, split,
question_id (the index as text).

One bad row is one counted skip naming the file and index: no answer (the test split: ``no_answers``), an answer
that is not a present option, a non-integer index, an image that is not base64 of an image
(``malformed_json`` / ``corrupt_image``), a short image reference to an index without an image.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import string
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from mmpeft.data.images import decode_image
from mmpeft.data.schema import IMAGE_MARKER, SampleError, check_key, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args

DEFAULT_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
SYS_PROMPT = "There are several options:"
PROMPT_LETTERS = "ABCDE"
ROTATION_STRIDE = 1_000_000


def present(value: Any) -> bool:
    return not pd.isna(value) and value != "nan"


def read_tsv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise SystemExit(f"{path}: cannot read it as a tab-separated MMBench table ({e})") from e
    missing = [c for c in ("index", "question", "answer", "image") if c not in table.columns]
    if missing:
        raise SystemExit(f"{path}: no column(s) {missing}; expected an MMBench TSV (index, question, hint, A, B, ..., "
                         "answer, category, l2-category, split, image)")
    return table


def prompt(row: dict[str, Any], suffix: str) -> str:
    """lmms-eval's ``mmbench_doc_to_text`` after the image marker (module docstring)."""
    options = SYS_PROMPT + "\n" + "".join(f"{c}. {row[c]}\n" for c in PROMPT_LETTERS
                                          if c in row and present(row[c]))
    options = options.rstrip("\n")
    hint = row.get("hint")
    text = f"{hint} {row['question']} {options}" if present(hint) else f"{row['question']} {options}"
    return f"{IMAGE_MARKER}\n{text}\n{suffix}"


def load_items(path: Path) -> tuple[list[dict[str, Any] | SampleError], dict[str, int]]:
    """One item per row with an answer, then one ``SampleError`` per bad row; and the counts of questions and rows."""
    table = read_tsv(path)
    rows = [{k: v for k, v in r.items()} for r in table.to_dict(orient="records")]
    images = {str(r["index"]): r["image"] for r in rows}
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path.name}:{n} index={row['index']!r}"
        index = row["index"]
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if not isinstance(index, int) or index < 0:
            bad.append(SampleError("malformed_json", f"index {row['index']!r} is not a non-negative integer", where))
            continue
        options = {c: str(row[c]) for c in string.ascii_uppercase if c in row and not pd.isna(row[c])}
        if not present(row["answer"]):
            bad.append(SampleError("no_answers", "no answer (a test split is scored on OpenCompass's server)", where))
            continue
        if row["answer"] not in options:
            bad.append(SampleError("malformed_json", f"answer {row['answer']!r} is none of the options "
                                   f"{sorted(options)}", where))
            continue
        image = row["image"]
        if isinstance(image, str) and len(image) <= 64:  # VLMEvalKit: the index of the row holding the image
            image = images.get(image)
        if not isinstance(image, str) or len(image) <= 64:
            bad.append(SampleError("missing_image", f"image {str(row['image'])[:64]!r} is neither base64 nor the "
                                   "index of a row with an image", where))
            continue
        items.append({"row": {**row, "index": index}, "options": options, "image": image, "where": where})
    bases = sum(1 for it in items if it["row"]["index"] < ROTATION_STRIDE)
    return items + bad, {"questions": bases, "rows": len(items)}


def make_prepare(suffix: str, source: str):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        row, where = item["row"], item["where"]
        key = check_key(f"mmbench-{row['index']}", where)
        try:
            data = base64.b64decode(item["image"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise SampleError("corrupt_image", f"image is not base64 ({e})", where) from e
        decode_image(data, where)
        ext = (Image.open(io.BytesIO(data)).format or "jpeg").lower()
        turns = [{"role": "user", "content": prompt(row, suffix)},
                 {"role": "assistant", "content": row["answer"]}]
        eval_fields = {"index": row["index"], "answer": row["answer"], "options": item["options"],
                       "question_id": str(row["index"])}
        eval_fields.update({name: str(row[column]) for name, column in
                            (("category", "category"), ("l2_category", "l2-category"), ("split", "split"))
                            if column in row and present(row[column])})
        record = make_record(key, source, conversations=turns, images=[image_field(0, ext)],
                             eval_fields=eval_fields, where=where)
        return PreparedSample(key=key, record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tsv", required=True, type=Path, help="the MMBench TSV (e.g. MMBench_DEV_EN.tsv)")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the options' newline "
                        "(lmms-eval's default post_prompt)")
    parser.add_argument("--source", default="mmbench", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items, counts = load_items(args.tsv)
    rotations = "" if counts["rows"] > counts["questions"] else \
        " -- no rotated rows (index >= 1e6): circular evaluation reduces to plain accuracy"
    print(f"{args.tsv}: {counts['questions']} question(s) in {counts['rows']} row(s){rotations}")
    return write_shards_from_args(
        args, items, make_prepare(args.prompt_suffix, args.source), description="MMBench",
        converter="convert_mmbench",
        options={"prompt_suffix": args.prompt_suffix, "source": args.source, "counts": counts},
        inputs={"tsv": args.tsv})


if __name__ == "__main__":
    main()
