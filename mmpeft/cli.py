"""The ``mmpeft`` command.

``mmpeft fit|validate|test`` run LightningCLI over ``VLMModule`` + ``VLDataModule`` with stackable YAML configs
(``--config a.yaml --config b.yaml``: later files override; ``--print_config`` shows the result). Extra commands:

    mmpeft fisher --output F.safetensors [--batches N] --config ...   diagonal Fisher for EWC on data.text_shards
    mmpeft eval --checkpoint DIR [--vqa S] [--captions S] [--ppl F] [--mc F] [--em F] [--vision S]   scores
    mmpeft report RUN_DIR... [--out DIR]                               table + plots across runs
    mmpeft export CHECKPOINT_DIR OUTPUT_DIR                            merge adapters into a standalone model
    mmpeft tiny-towers DIR                                             write the tiny offline towers configs use
    mmpeft quickstart                                                  tiny end-to-end run in pure PyTorch

Run directory (``--run_dir``, default ``runs/default``)::

    config.yaml          the resolved config of the run
    trainability.md      per component: method, trainable and frozen parameters
    metrics.csv          every logged value (CSV logger); events.out.tfevents.* (TensorBoard)
    checkpoints/         step=N.ckpt/ and last.ckpt/ directories (see mmpeft.callbacks.checkpoint_io)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from mmpeft.callbacks.checkpoint_io import SafetensorsCheckpointIO
from mmpeft.callbacks.run_logger import RunConfigSaver, RunCSVLogger
from mmpeft.data.datamodule import VLDataModule, check_data_options
from mmpeft.module import VLMModule
from mmpeft.optimization import LearningRates, check_optimizer_options

EXTRA_COMMANDS = ("fisher", "eval", "report", "demo", "export", "tiny-towers", "quickstart")


class MMPeftCLI(LightningCLI):
    """LightningCLI with mmpeft's run directory, loggers, checkpointing and model -> data ``connect``."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any):
        super().__init__(
            VLMModule, VLDataModule, args=args, run=run, seed_everything_default=0,
            save_config_callback=RunConfigSaver, save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False}, **kwargs,
        )

    def before_instantiate_classes(self) -> None:
        """Check the options that need no tower before any tower loads (a bad learning rate should not cost a
        minute of model loading)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_run_options(config.as_dict(), self.subcommand)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs/default",
                            help="run directory: config, logs, metrics and checkpoints go here")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                            help="save a checkpoint every N optimizer steps (and at the end)")
        parser.add_argument("--keep_checkpoints", type=int, default=2,
                            help="how many of the latest step checkpoints to keep (last.ckpt is always kept)")

    def instantiate_trainer(self, **kwargs: Any):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run_dir = Path(config["run_dir"])
        trainer_config = config.get("trainer", {})
        user_loggers = trainer_config.get("logger")
        if user_loggers is not False:
            # The run directory's metrics.csv (continued across resumes) always comes first, so trainer.log_dir,
            # config.yaml and trainability.md stay in the run directory whatever trackers the user adds.
            if user_loggers in (None, True):
                user_loggers = [TensorBoardLogger(run_dir, name="", version="", default_hp_metric=False)]
            elif not isinstance(user_loggers, list):
                user_loggers = [user_loggers]
            kwargs["logger"] = [RunCSVLogger(run_dir), *user_loggers]
        kwargs.setdefault("default_root_dir", str(run_dir))
        kwargs["plugins"] = [*(trainer_config.get("plugins") or []), SafetensorsCheckpointIO()]
        checkpoint = ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step={step:06d}", auto_insert_metric_name=False,
            every_n_train_steps=config["checkpoint_every_n_steps"], save_last=True, monitor="step", mode="max",
            save_top_k=config["keep_checkpoints"],
        )
        kwargs["callbacks"] = [*(trainer_config.get("callbacks") or []), checkpoint]
        return super().instantiate_trainer(**kwargs)

    def connect_data(self) -> None:
        vlm = self.model.vlm
        self.datamodule.connect(tokenizer=vlm.llm.tokenizer, image_transform=vlm.vision.image_transform,
                                image_token=vlm.llm.image_token, num_image_tokens=vlm.num_image_tokens)

    def before_fit(self) -> None:
        self.connect_data()

    def before_validate(self) -> None:
        self.connect_data()

    def before_test(self) -> None:
        self.connect_data()


def check_run_options(config: dict[str, Any], subcommand: str | None) -> None:
    """Validate model / data / trainer options from the parsed config, before anything is built.

    The same checks run again in the classes' constructors (for Python users); here they run first and cheaply.
    The LLM's position limit is read from its config file alone.
    """
    model, data = config.get("model") or {}, config.get("data") or {}
    LearningRates(**(model.get("lr") or {}))
    check_optimizer_options(model.get("weight_decay", 0.0), tuple(model.get("betas", (0.9, 0.999))),
                            model.get("warmup_steps", 0), model.get("min_lr_ratio", 0.1))
    check_data_options(**{k: data.get(k) for k in (
        "text_ratio", "text_shards", "batch_size", "eval_batch_size", "num_workers", "max_length", "shuffle_buffer",
        "bucket_window", "resampled", "rows_per_epoch")})
    max_steps = (config.get("trainer") or {}).get("max_steps")
    if subcommand == "fit" and (max_steps is None or max_steps <= 0):
        raise ValueError(f"trainer.max_steps={max_steps}: set a positive number of optimizer steps (the learning "
                         "rate schedule is defined over it)")
    llm = ((model.get("vlm") or {}).get("init_args") or {}).get("llm") or {}
    if llm.get("class_path", "").endswith("LLMTower") and (llm.get("init_args") or {}).get("name"):
        from mmpeft.towers.llm import llm_position_limit

        args = llm["init_args"]
        limit = llm_position_limit(args["name"], args.get("revision"))
        prompt = int((model.get("vlm") or {}).get("init_args", {}).get("soft_prompt_tokens") or 0)
        length = data.get("max_length")
        if limit is not None and length is not None and length + prompt > limit:
            raise ValueError(f"data.max_length={length}{f' + {prompt} soft prompt tokens' if prompt else ''} "
                             f"exceeds what the LLM {args['name']!r} takes ({limit} positions, from its config): "
                             f"set data.max_length <= {limit - prompt}")


def fisher_main(args: list[str]) -> Path:
    parser = argparse.ArgumentParser(prog="mmpeft fisher", description="Diagonal Fisher of the base LLM for EWC, "
                                     "on data.text_shards; the rest of the arguments are the fit config.")
    parser.add_argument("--output", required=True, help="safetensors file to write")
    parser.add_argument("--batches", type=int, default=None, help="batches to use (default: all of text_shards)")
    own, rest = parser.parse_known_args(args)
    from mmpeft.guards.ewc import estimate_fisher, save_fisher

    cli = MMPeftCLI(args=rest, run=False)
    cli.connect_data()
    fisher, meta = estimate_fisher(cli.model.vlm, cli.datamodule.text_dataloader(), max_batches=own.batches)
    path = save_fisher(own.output, fisher, meta)
    print(f"wrote {path}: {len(fisher)} tensors from {meta['batches']} batches ({meta['tokens']} tokens)")
    return path


def tools_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="mmpeft")
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="train + generate + save + export on tiny offline towers")
    quick.add_argument("--workdir", default="runs/quickstart", help="where towers, checkpoint and export go")
    quick.add_argument("--steps", type=int, default=150, help="optimizer steps")
    exp = sub.add_parser("export", help="merge adapters of a checkpoint directory into a standalone model")
    exp.add_argument("checkpoint", help="a checkpoint directory (save_trainable output or a training checkpoint)")
    exp.add_argument("output", help="export directory (replaced atomically)")
    from mmpeft.checkpoint import add_loading_flags

    add_loading_flags(exp)
    tiny = sub.add_parser("tiny-towers", help="write the tiny random towers that configs/model/tiny.yaml loads")
    tiny.add_argument("directory", nargs="?", default=".mmpeft_cache/tiny")
    parsed = parser.parse_args(args)
    if parsed.command == "quickstart":
        from mmpeft.apps.quickstart import run

        run(parsed.workdir, steps=parsed.steps)
    elif parsed.command == "export":
        from mmpeft.checkpoint import export, load_pretrained, loading_options

        print(export(load_pretrained(parsed.checkpoint, **loading_options(parsed)), parsed.output))
    else:
        from mmpeft.apps.tiny import save_tiny_towers

        print(save_tiny_towers(parsed.directory))


def cli_main(args: list[str] | None = None) -> Any:
    """Entry point usable from Python (tests, notebooks): ``cli_main(["fit", "--config", ...])``."""
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] == "fisher":
        return fisher_main(args[1:])
    if args and args[0] == "eval":
        from mmpeft.eval.run import main as eval_main

        return eval_main(args[1:])
    if args and args[0] == "demo":
        from mmpeft.apps.demo import main as demo_main

        return demo_main(args[1:])
    if args and args[0] == "report":
        from mmpeft.eval.report import main as report_main

        return report_main(args[1:])
    if args and args[0] in EXTRA_COMMANDS:
        return tools_main(args)
    return MMPeftCLI(args=args)


def main() -> None:
    """The console entry point: an error the user can act on (a bad option, file or data: ``ValueError``, ``OSError``
    and their kinds such as ``NoUsableRows`` and ``PartialData``; a missing runtime such as java:
    ``RuntimeError``) ends with its message and exit code 2, not a traceback; ``MMPEFT_DEBUG=1`` shows it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli_main()
    except (ValueError, OSError, RuntimeError) as error:
        if os.environ.get("MMPEFT_DEBUG"):
            raise
        print(f"mmpeft: error: {error}\n(set MMPEFT_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
