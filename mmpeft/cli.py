"""The ``mmpeft`` command.

Subcommands available now: ``quickstart`` (tiny end-to-end run) and ``export`` (merge a checkpoint's adapters
into a standalone model). Training (``fit``/``validate``/``test``) arrives with the Lightning CLI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def cli_main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mmpeft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="train + generate + save + export on tiny offline towers")
    quick.add_argument("--workdir", default="runs/quickstart", help="where towers, checkpoint and export go")
    quick.add_argument("--steps", type=int, default=150, help="optimizer steps")
    exp = sub.add_parser("export", help="merge adapters of a checkpoint directory into a standalone model")
    exp.add_argument("checkpoint", help="directory written by save_trainable")
    exp.add_argument("output", help="export directory (replaced atomically)")
    parsed = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if parsed.command == "quickstart":
        from mmpeft.quickstart import run

        run(parsed.workdir, steps=parsed.steps)
    elif parsed.command == "export":
        from mmpeft.checkpoint import export, load_pretrained

        print(export(load_pretrained(parsed.checkpoint), parsed.output))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
