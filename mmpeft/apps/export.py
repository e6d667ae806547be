"""``mmpeft export CHECKPOINT OUTPUT``: merge a checkpoint's adapters into a standalone model directory.

The export loads without mmpeft's adapter code (see ``mmpeft.checkpoint.export``); the loading flags are those of
``mmpeft eval``, since both read a model directory that may ask for more than mmpeft's own classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    from mmpeft.checkpoint import add_loading_flags, export, load_pretrained, loading_options

    parser = argparse.ArgumentParser(prog="mmpeft export", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory (save_trainable output or a training checkpoint)")
    parser.add_argument("output", help="export directory (replaced atomically)")
    add_loading_flags(parser)
    args = parser.parse_args(argv)
    path = export(load_pretrained(args.checkpoint, **loading_options(args)), args.output)
    print(path)
    return path
