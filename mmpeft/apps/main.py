"""The ``mmpeft`` command: one verb per job, each with its own ``--help``.

``mmpeft --help`` (or ``mmpeft`` alone) lists the verbs. ``fit``, ``validate`` and ``test`` are LightningCLI's
(``mmpeft.cli.MMPeftCLI``: stacked ``--config`` files, ``--print_config``); every other verb parses its own options.
``cli_main(args)`` runs a command from Python (tests, notebooks) and returns what the verb returns: the CLI object
for ``fit``/``validate``/``test``, the scores for ``eval``, the written path for ``fisher``.

LightningCLI's ``predict`` is not a verb (it is refused with a pointer to the verbs below): generation is
``mmpeft generate`` (a prompts file) and ``mmpeft chat`` (interactive), scoring is ``mmpeft eval``.

This module is the only place that knows every verb; verbs import their code when they run, so ``mmpeft --help``
starts without loading torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from mmpeft import __version__


def lightning(verb: str) -> Callable[[list[str]], Any]:
    """A LightningCLI verb: ``MMPeftCLI`` with the verb as its subcommand."""

    def run(args: list[str]) -> Any:
        from mmpeft.cli import MMPeftCLI

        return MMPeftCLI(args=[verb, *args])

    return run


def module_main(module: str) -> Callable[[list[str]], Any]:
    """A verb whose code is ``module.main(argv)``."""

    def run(args: list[str]) -> Any:
        from importlib import import_module

        return import_module(module).main(args)

    return run


@dataclass(frozen=True)
class Verb:
    summary: str  # one line in ``mmpeft --help``
    run: Callable[[list[str]], Any]


VERBS: dict[str, Verb] = {
    "fit": Verb("train: LightningCLI over VLMModule + VLDataModule, stacked --config files", lightning("fit")),
    "validate": Verb("one pass over data.val_shards (validation loss and data accounting)", lightning("validate")),
    "test": Verb("one pass over data.test_shards", lightning("test")),
    "eval": Verb("score a checkpoint: VQA, captions, text probes, vision drift, lm-eval",
                 module_main("mmpeft.eval.run")),
    "chat": Verb("talk to a checkpoint or export: streaming, multi-turn, images added mid-conversation",
                 module_main("mmpeft.apps.chat")),
    "generate": Verb("batched generation from a prompts JSONL file to an output JSONL file",
                     module_main("mmpeft.apps.generate")),
    "report": Verb("table and plots across run directories", module_main("mmpeft.eval.report")),
    "sweep": Verb("grid of configs x seeds, run locally or on SLURM", module_main("mmpeft.apps.sweep")),
    "demo": Verb("train, score and compare two recipes on the embedded towers, offline on a CPU (about 10 min)",
                 module_main("mmpeft.apps.demo")),
    "export": Verb("merge a checkpoint's adapters into a standalone model directory",
                   module_main("mmpeft.apps.export")),
    "fisher": Verb("diagonal Fisher of the base LLM on data.text_shards, for the EWC guard",
                   module_main("mmpeft.apps.fisher")),
    "tiny-towers": Verb("write the tiny random towers that configs/model/tiny.yaml loads",
                        module_main("mmpeft.apps.tiny")),
    "quickstart": Verb("train, generate, save and export on tiny towers in pure PyTorch (15 s)",
                       module_main("mmpeft.apps.quickstart")),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: mmpeft VERB [options]    (mmpeft VERB --help: the verb's options)", "",
             "Parameter-efficient fine-tuning of vision-language models.", "", "verbs:"]
    lines += [f"  {name:<{width}}  {verb.summary}" for name, verb in VERBS.items()]
    lines += ["", "options:", f"  {'-h, --help':<{width}}  this list", f"  {'--version':<{width}}  mmpeft's version",
              "", "MMPEFT_DEBUG=1 shows the traceback of an error."]
    return "\n".join(lines)


def refuse(message: str, *, listing: bool = False) -> NoReturn:
    """A command line that names no verb: ``message`` (after the list of verbs if ``listing``) on stderr, exit
    code 2 (as argparse)."""
    print(f"{usage()}\n\n" * listing + f"mmpeft: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def cli_main(args: list[str] | None = None) -> Any:
    """Runs ``mmpeft ARGS`` (default ``sys.argv[1:]``): ``cli_main(["fit", "--config", ...])``."""
    args = list(sys.argv[1:] if args is None else args)
    if not args:
        refuse("name a verb", listing=True)
    verb, rest = args[0], args[1:]
    if verb in ("-h", "--help"):
        print(usage())
        return None
    if verb == "--version":
        print(f"mmpeft {__version__}")
        return None
    if verb.startswith("-"):
        refuse(f"{verb!r} before the verb: options go after it (mmpeft fit --config FILE ...)")
    if verb == "predict":
        refuse("'predict' is not a verb: generate with mmpeft generate --model DIR --input prompts.jsonl "
               "--output out.jsonl (or mmpeft chat --model DIR); score with mmpeft eval --checkpoint DIR ...")
    if verb not in VERBS:
        refuse(f"unknown verb {verb!r}; the verbs: {', '.join(VERBS)} (mmpeft --help: what each does)")
    return VERBS[verb].run(rest)


def main() -> None:
    """The console entry point: an error the user can act on (a bad option, file or data: ``ValueError``, ``OSError``
    and their kinds such as ``NoUsableRows`` and ``PartialData``; a missing runtime such as java:
    ``RuntimeError``) ends with its message and exit code 2, not a traceback; ``MMPEFT_DEBUG=1`` shows it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # the lightning package prints its records through a handler of its own and also passes them up to the root
    # handler above: every Lightning line came twice
    logging.getLogger("lightning").propagate = False
    # printed by every command that imports peft (which imports torchao and bitsandbytes when installed), about
    # those libraries' internals, not the user's run: torchao's enum registration that torch deprecated, and
    # bitsandbytes' optional `kernels` package for its CPU 4-bit matmul
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        cli_main()
    except (ValueError, OSError, RuntimeError) as error:
        if os.environ.get("MMPEFT_DEBUG"):
            raise
        print(f"mmpeft: error: {error}\n(set MMPEFT_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
