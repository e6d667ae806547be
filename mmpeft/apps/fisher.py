"""``mmpeft fisher --output F.safetensors [--batches N] --config ...``: the diagonal Fisher of the base LLM for EWC.

Estimated on ``data.text_shards`` of the fit config given after the own options (the same ``--config`` files and
overrides as ``mmpeft fit``); ``configs/guard/ewc.yaml`` names the file it writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog="mmpeft fisher", description=__doc__, epilog="Every other option is a fit "
                                     "option (mmpeft fit --help); data.text_shards is the data it runs on.")
    parser.add_argument("--output", required=True, help="safetensors file to write")
    parser.add_argument("--batches", type=int, default=None, help="batches to use (default: all of text_shards)")
    own, rest = parser.parse_known_args(argv)
    from mmpeft.cli import MMPeftCLI
    from mmpeft.guards.ewc import estimate_fisher, save_fisher

    cli = MMPeftCLI(args=rest, run=False)
    cli.connect_data()
    fisher, meta = estimate_fisher(cli.model.vlm, cli.datamodule.text_dataloader(), max_batches=own.batches)
    path = save_fisher(own.output, fisher, meta)
    print(f"wrote {path}: {len(fisher)} tensors from {meta['batches']} batches ({meta['tokens']} tokens)")
    return path
