"""``mmpeft export CHECKPOINT OUTPUT [--format mmpeft|hf-llava]``: merge a checkpoint's adapters into a model
directory that loads without mmpeft's adapter code.

``--format mmpeft`` (default): the standalone mmpeft export (``mmpeft.checkpoint.export``; ``load_pretrained``
reads it, its ``llm/`` is a plain transformers model). ``--format hf-llava``: a ``LlavaForConditionalGeneration``
directory with its processor (``mmpeft.hf_llava_export``) that ``transformers`` alone loads; refused, naming why,
when the towers or projector cannot be expressed. The loading flags are those of ``mmpeft eval``, since both read a
model directory that may ask for more than mmpeft's own classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("mmpeft", "hf-llava")


def main(argv: list[str] | None = None) -> Path:
    from mmpeft.checkpoint import add_loading_flags, export, load_pretrained, loading_options

    parser = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint directory (save_trainable output or a training checkpoint)")
    parser.add_argument("output", help="export directory (replaced atomically)")
    parser.add_argument("--format", choices=FORMATS, default="mmpeft",
                        help="mmpeft: standalone mmpeft directory (default); hf-llava: transformers "
                             "LlavaForConditionalGeneration + processor (CLIP ViT towers with a 2-layer MLP projector)")
    add_loading_flags(parser)
    args = parser.parse_args(argv)
    vlm = load_pretrained(args.checkpoint, **loading_options(args))
    if args.format == "hf-llava":
        from mmpeft.hf_llava_export import export_hf_llava

        path = export_hf_llava(vlm, args.output)
    else:
        path = export(vlm, args.output)
    print(path)
    return path
