"""``mmpeft generate --model DIR --input prompts.jsonl --output out.jsonl``: a reply for every line of a prompts
file, batched, greedy or sampled, with a progress bar; prompts rendered exactly as the model was trained.

The prompts file (one JSON object per line; images relative to the file)::

    {"id": "q1", "prompt": "Describe the picture.", "images": ["img/cat.jpg"]}
    {"id": "q2", "conversations": [{"role": "user", "content": "<image>\\nWhat is it?"}], "images": ["cat.jpg"]}
    {"id": "q3", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "cat.jpg"}},
                                                           {"type": "text", "text": "What is it?"}]}]}

(the full format: ``mmpeft.inference.prompts_file``). Every line is checked before anything is generated; bad
lines are listed with their numbers and refused unless --allow-partial. The output is written atomically, one row
per prompt in file order: id, line, prediction, finish_reason, token counts and the settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmpeft.apps.inference_options import add_inference_flags, load_from_flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="PROMPTS.jsonl", help="the prompts file")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help="predictions file (replaced atomically)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default %(default)s)")
    p.add_argument("--allow-partial", action="store_true",
                   help="generate the usable lines even if some are bad (each bad line is still listed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_inference_flags(p)
    return p


def main(argv: list[str] | None = None):
    """Runs the command; returns the ``GenerationReport``."""
    from mmpeft.inference import generate_file
    from mmpeft.inference.batch_generate import PartialPrompts

    p = parser()
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size {args.batch_size}: give at least 1")
    if not Path(args.input).is_file():  # before the model loads
        p.error(f"--input {args.input}: no such file")
    if not Path(args.output).resolve().parent.is_dir():
        p.error(f"--output {args.output}: its directory does not exist")
    model, settings = load_from_flags(args)
    try:
        report = generate_file(model, args.input, args.output, settings, batch_size=args.batch_size,
                               allow_partial=args.allow_partial, progress=not args.no_progress)
    except PartialPrompts as e:
        raise SystemExit(f"mmpeft generate: {e}") from None
    written, *bad_lines = report.summary(args.input).splitlines()
    print(written)
    if bad_lines:  # --allow-partial: every line that was not used, with its number and reason
        print("\n".join(bad_lines), file=sys.stderr)
    return report
