#!/usr/bin/env python
"""MME -> mmpeft eval shards, with lmms-eval's ``mme`` prompt.

Input: the released ``MME_Benchmark_release_version`` directory (``--mme-root``), one folder per subtask
(``existence``, ``count``, ..., ``code_reasoning``; the fourteen of ``mmpeft.eval.benchmarks.mme``). A subtask
folder holds either ``images/`` + ``questions_answers_YN/`` (artwork, celebrity, landmark, posters, scene) or the
images and the question files side by side. Each ``<image stem>.txt`` has two lines ``question<TAB>Yes|No``, the
two questions of that image (MME scores the pair).

    python data_prep/convert_mme.py --mme-root MME_Benchmark_release_version --out shards/mme

The user turn is lmms-eval's (EvolvingLMMs-Lab/lmms-eval 75571cf, ``lmms_eval/tasks/mme/utils.py``
``mme_doc_to_text`` with ``mme.yaml``'s default ``post_prompt``), after the image marker as its llava model places
it: ``<image>\\n`` + the question stripped, with `` Please answer yes or no.`` removed + ``--prompt-suffix``
(an empty suffix keeps the question as released). The assistant turn is the answer. ``eval``: answer (Yes/No),
category (the subtask), image_id (``<subtask>/<image file>``, the pair's key), question_id
(``<subtask>/<stem>/<line>``).

Skips are counted and name the file: a question file whose lines are not exactly two ``question<TAB>Yes|No``
lines drops both of its questions (``malformed_json``: one question alone cannot be scored as a pair); a missing,
corrupt or oversized image drops both. A subtask folder missing from ``--mme-root`` stops the run unless
``--subtasks`` names the ones to convert.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from mmpeft.data.images import IMAGE_EXTENSIONS, read_image_file
from mmpeft.data.schema import IMAGE_MARKER, SampleError, check_key, image_field, make_record
from mmpeft.data.shards import PreparedSample, add_writer_arguments, write_shards_from_args
from mmpeft.eval.benchmarks.mme import COGNITION, PERCEPTION

DEFAULT_SUFFIX = "\nAnswer the question using a single word or phrase."
REPLACED = " Please answer yes or no."
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def subtask_dirs(root: Path, subtask: str) -> tuple[Path, Path]:
    """``(question file directory, image directory)`` of one subtask folder."""
    folder = root / subtask
    if not folder.is_dir():
        raise SystemExit(f"{root}: no folder {subtask!r}; point --mme-root at MME_Benchmark_release_version, or "
                         "name the subtasks present with --subtasks")
    if (folder / "questions_answers_YN").is_dir():
        return folder / "questions_answers_YN", folder / "images"
    return folder, folder


def find_image(image_dir: Path, stem: str) -> Path:
    for ext in IMAGE_EXTENSIONS:
        for name in (f"{stem}.{ext}", f"{stem}.{ext.upper()}"):
            if (image_dir / name).is_file():
                return image_dir / name
    return image_dir / f"{stem}.jpg"  # missing: read_image_file names it as a counted missing_image


def parse_pair(text: str) -> list[tuple[str, str]] | None:
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    pairs = [tuple(line.split("\t")) for line in lines]
    if len(pairs) != 2 or any(len(p) != 2 or p[1].strip().lower() not in ("yes", "no") or not p[0].strip()
                              for p in pairs):
        return None
    return [(q, a.strip()) for q, a in pairs]


def load_items(root: Path, subtasks: list[str]) -> list[dict[str, Any] | SampleError]:
    """Two items per question file (its questions), subtasks in MME's order, then the ``SampleError``s."""
    items: list[dict[str, Any] | SampleError] = []
    bad: list[SampleError] = []
    for subtask in subtasks:
        text_dir, image_dir = subtask_dirs(root, subtask)
        for path in sorted(text_dir.glob("*.txt")):
            where = f"{subtask}/{path.relative_to(root / subtask)}"
            try:
                pair = parse_pair(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as e:
                pair, reason = None, f"cannot be read as UTF-8 text ({e})"
            else:
                reason = "must hold exactly two lines 'question<TAB>Yes|No'"
            if pair is None:
                bad += [SampleError("malformed_json", f"{reason}; both questions of the image dropped",
                                    f"{where} question {i}") for i in (1, 2)]
                continue
            image = find_image(image_dir, path.stem)
            for i, (question, answer) in enumerate(pair, start=1):
                items.append({"subtask": subtask, "stem": path.stem, "image": image, "line": i,
                              "question": question, "answer": answer, "where": f"{where}:{i}"})
    return items + bad


def prompt(question: str, suffix: str) -> str:
    """lmms-eval's ``mme_doc_to_text`` after the image marker (module docstring)."""
    question = question.strip()
    if suffix:
        question = question.replace(REPLACED, "") + suffix
    return f"{IMAGE_MARKER}\n{question}"


def make_prepare(suffix: str, source: str):
    def prepare(item: dict[str, Any]) -> PreparedSample:
        subtask, stem, where = item["subtask"], item["stem"], item["where"]
        key = check_key(_UNSAFE.sub("_", f"mme-{subtask}-{stem}-{item['line']}"), where)
        data, ext = read_image_file(item["image"], where)
        turns = [{"role": "user", "content": prompt(item["question"], suffix)},
                 {"role": "assistant", "content": item["answer"]}]
        eval_fields = {"answer": item["answer"], "category": subtask, "image_id": f"{subtask}/{item['image'].name}",
                       "question_id": f"{subtask}/{stem}/{item['line']}"}
        record = make_record(key, source, conversations=turns, images=[image_field(0, ext)],
                             eval_fields=eval_fields, where=where)
        return PreparedSample(key=key, record=record, files={image_field(0, ext): data})

    return prepare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mme-root", required=True, type=Path, help="the MME_Benchmark_release_version directory")
    parser.add_argument("--subtasks", nargs="+", default=list(PERCEPTION + COGNITION),
                        choices=list(PERCEPTION + COGNITION), help="subtasks to convert (default: all fourteen)")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text after the question (lmms-eval's "
                        "default post_prompt; it replaces ' Please answer yes or no.')")
    parser.add_argument("--source", default="mme", help="source tag stored in each sample")
    add_writer_arguments(parser)
    args = parser.parse_args(argv)
    items = load_items(args.mme_root, args.subtasks)
    return write_shards_from_args(
        args, items, make_prepare(args.prompt_suffix, args.source), description="MME", converter="convert_mme",
        options={"mme_root": str(args.mme_root.resolve()), "subtasks": args.subtasks,
                 "prompt_suffix": args.prompt_suffix, "source": args.source},
        inputs={})


if __name__ == "__main__":
    main()
