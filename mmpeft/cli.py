"""``MMPeftCLI``: the LightningCLI behind ``mmpeft fit|validate|test``.

LightningCLI over ``VLMModule`` + ``VLDataModule`` with stackable YAML configs (``--config a.yaml --config b.yaml``:
later files override; ``--print_config`` shows the result). The ``mmpeft`` command itself (every verb, ``--help``)
is an application: ``mmpeft.apps.main``.

Run directory (``--run_dir``, default ``runs/default``)::

    config.yaml          the resolved config of the run
    trainability.md      per component: method, trainable and frozen parameters
    metrics.csv          every logged value, lr/<group> of every parameter group included (CSV logger)
    events.out.tfevents.*, hparams.yaml    TensorBoard (the default trainer.logger)
    wandb/, mlflow.db    trackers of trainer.logger (logger/*.yaml presets; mmpeft.callbacks.trackers)
    checkpoints/         step=N.ckpt/ and last.ckpt/ directories (see mmpeft.callbacks.checkpoint_io)

config.yaml, trainability.md and metrics.csv are written whatever ``trainer.logger`` says (``false`` included: it
then means no tracker besides metrics.csv). Progress: a step-counting bar on a terminal, else a line every
``--progress_every`` steps (``mmpeft.callbacks.step_progress``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from mmpeft.callbacks.checkpoint_io import SafetensorsCheckpointIO
from mmpeft.callbacks.run_logger import RunConfigSaver, RunCSVLogger
from mmpeft.callbacks.step_progress import step_progress
from mmpeft.callbacks.trackers import check_trackers_installed, place_in_run_dir
from mmpeft.config_files import config_values, load_config_value, packaged_configs, resolve_config_args
from mmpeft.data.datamodule import VLDataModule, check_data_options
from mmpeft.data.shard_specs import resolve_shards
from mmpeft.module import VLMModule
from mmpeft.optimization import LearningRates, check_optimizer_options
from mmpeft.option_errors import explain as explain_option_error

AUTO_OPTIMIZER_OPTIONS = ("optimizer", "lr_scheduler")  # LightningCLI's, switched off (auto_configure_optimizers)


class MMPeftCLI(LightningCLI):
    """LightningCLI with mmpeft's run directory, loggers, checkpointing and model -> data ``connect``.

    ``--config NAME`` is a user's file or a packaged preset (``mmpeft.config_files``), for the ``mmpeft`` command
    and Python callers alike. LightningCLI's ``--optimizer`` / ``--lr_scheduler`` do not exist here: they would
    replace the module's per-group learning rates and schedule (``VLMModule.configure_optimizers``).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any):
        super().__init__(
            VLMModule, VLDataModule, args=args, run=run, seed_everything_default=0,
            save_config_callback=RunConfigSaver, save_config_kwargs={"overwrite": True},
            # no abbreviations: argparse would take --trainer.max_step as max_steps; "mmpeft" names the command in
            # usage lines and tips whatever the launcher (python -m, a sweep's job) was
            parser_kwargs={"default_env": False, "allow_abbrev": False, "prog": "mmpeft"},
            auto_configure_optimizers=False, **kwargs,
        )

    def init_parser(self, **kwargs: Any):
        parser = super().init_parser(**kwargs)
        # eval/ holds `mmpeft eval` configs, not training ones
        groups = sorted({name.split("/", 1)[0] + "/" for name in packaged_configs()} - {"eval/"})
        parser._option_string_actions["--config"].help = (  # argparse keeps no public setter for an action's help
            f"a YAML file, or a packaged preset by name from any directory ({' '.join(groups)}: e.g. model/tiny.yaml; "
            "your own file of that name wins). Repeat to stack: later files override key by key; a list key ending "
            "in + (guards+:) appends")
        return parser

    def parse_arguments(self, parser, args) -> None:
        """Parse ``args`` (default ``sys.argv[1:]``) with every ``--config`` name resolved to its file."""
        if isinstance(args, dict | Namespace):
            super().parse_arguments(parser, args)
            return
        args = resolve_config_args(sys.argv[1:] if args is None else args)
        refuse_auto_optimizer(args)
        self.config = parse_or_explain(parser, args)

    def before_instantiate_classes(self) -> None:
        """Check the options that need no tower before any tower loads (a bad learning rate should not cost a
        minute of model loading)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_run_options(config.as_dict(), self.subcommand)
        check_trackers_installed(config.get("trainer.logger"))
        place_in_run_dir(config.get("trainer.logger"), Path(config.run_dir))

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs/default",
                            help="run directory: config, logs, metrics and checkpoints go here")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                            help="save a checkpoint every N optimizer steps (and at the end)")
        parser.add_argument("--keep_checkpoints", type=int, default=2,
                            help="how many of the latest step checkpoints to keep (last.ckpt is always kept)")
        parser.add_argument("--progress_every", type=int | None, default=None,
                            help="when stdout is not a terminal (CI, SLURM, nohup): print a progress line (step, "
                                 "loss, lr, tokens/s, elapsed, ETA) every N optimizer steps; default "
                                 "trainer.log_every_n_steps. On a terminal: a tqdm bar over the run's steps")

    def instantiate_trainer(self, **kwargs: Any):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        run_dir = Path(config["run_dir"])
        trainer_config = config.get("trainer", {})
        # The run directory's metrics.csv (continued across resumes) always comes first, so trainer.log_dir,
        # config.yaml and trainability.md stay in the run directory whatever trackers the user adds; logger=false
        # (or []) means no tracker besides it.
        user_loggers = trainer_config.get("logger")
        if user_loggers in (None, True):
            user_loggers = [TensorBoardLogger(run_dir, name="", version="", default_hp_metric=False)]
        elif user_loggers is False:
            user_loggers = []
        elif not isinstance(user_loggers, list):
            user_loggers = [user_loggers]
        kwargs["logger"] = [RunCSVLogger(run_dir), *user_loggers]
        kwargs.setdefault("default_root_dir", str(run_dir))
        kwargs["plugins"] = [*(trainer_config.get("plugins") or []), SafetensorsCheckpointIO()]
        checkpoints = [] if trainer_config.get("enable_checkpointing") is False else [ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step={step:06d}", auto_insert_metric_name=False,
            every_n_train_steps=config["checkpoint_every_n_steps"], save_last=True, monitor="step", mode="max",
            save_top_k=config["keep_checkpoints"],
        )]
        callbacks = [*(trainer_config.get("callbacks") or []), *checkpoints]
        if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor(logging_interval="step"))  # lr/<group> for every parameter group
        if trainer_config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(step_progress(config.get("progress_every")))  # steps, not "Epoch 3/-2"
        kwargs["callbacks"] = callbacks
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


def parse_or_explain(parser, args: list[str]) -> Namespace:
    """``parser.parse_args(args)``; an option that does not parse raises ``ValueError`` naming it, where it was set
    and the nearest valid names (``mmpeft.option_errors``), instead of jsonargparse's usage text and exit."""
    action = parser._subcommands_action  # jsonargparse keeps no public accessor; None without subcommands (run=False)
    subparsers = action._name_parser_map if action is not None else {}
    every = [parser, *subparsers.values()]
    before = [p.exit_on_error for p in every]
    for p in every:
        p.exit_on_error = False
    try:
        return parser.parse_args(args)
    except ArgumentError as e:
        subcommand = next((a for a in args if a in subparsers), "fit")
        command = subparsers.get(subcommand, parser)
        known = [a.dest for a in command._actions]
        raise ValueError(explain_option_error(str(e), args, known, subcommand)) from None
    finally:
        for p, value in zip(every, before):
            p.exit_on_error = value


def refuse_auto_optimizer(args: list[str]) -> None:
    """Raise ValueError for LightningCLI's ``--optimizer`` / ``--lr_scheduler``, on the command line or as a key of a
    ``--config`` file, naming mmpeft's own options: a single auto-configured optimizer would silently replace the
    per-group learning rates and the schedule."""
    given = [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]
    given = [option for option in given if option[2:].split(".", 1)[0] in AUTO_OPTIMIZER_OPTIONS]
    for value in config_values(args):
        content = load_config_value(value)
        if isinstance(content, dict):
            given += [f"{value}: key {key}" for key in AUTO_OPTIMIZER_OPTIONS if key in content]
    if given:
        raise ValueError(
            f"{given[0]}: not an mmpeft option. mmpeft trains with AdamW, one learning rate per parameter group "
            "(projector, vision, llm, soft prompt) and a warmup + cosine schedule over trainer.max_steps, which "
            "LightningCLI's automatic optimizer would replace. Set model.lr.projector / model.lr.vision / "
            "model.lr.llm / model.lr.soft_prompt, model.weight_decay, model.betas, model.warmup_steps and "
            "model.min_lr_ratio instead")


def refuse_ignored_trainer_options(trainer: dict[str, Any], subcommand: str | None) -> None:
    """Raise ValueError for ``trainer.*`` options that a stacked config could set but mmpeft would override or cut
    short without a word (the run directory decides where everything goes; the schedule runs to max_steps)."""
    if trainer.get("default_root_dir") is not None:
        raise ValueError(f"trainer.default_root_dir={trainer['default_root_dir']!r} would be ignored: logs, "
                         "checkpoints and config.yaml go to the run directory. Set --run_dir instead")
    epochs = trainer.get("max_epochs")
    if subcommand == "fit" and epochs is not None and epochs != -1:
        raise ValueError(f"trainer.max_epochs={epochs}: a run stopped by epochs ends part-way through the learning-"
                         "rate schedule, which runs over trainer.max_steps. Set trainer.max_steps only (epochs x "
                         "rows per epoch / (batch_size x accumulate_grad_batches x devices)) and leave max_epochs "
                         "unset")


def refuse_fresh_fit_over_a_run(run_dir: Path, ckpt_path: str | None) -> None:
    """A fit without ``--ckpt_path`` into a run directory that already holds a run's checkpoint is refused: it would
    start from scratch, write ``last-v1.ckpt`` beside the old ``last.ckpt`` (which eval and export would then
    read) and append its steps to the old run's ``metrics.csv``."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None and last.exists():
        raise ValueError(f"--run_dir={run_dir} already holds a run ({last}). Resume it with --ckpt_path={last}, "
                         "or train a new run in another --run_dir (or delete this one first)")


def shards_read(subcommand: str | None, data: dict[str, Any], trainer: dict[str, Any]) -> list[str]:
    """The ``data.*_shards`` options that ``subcommand`` is set up to read (set, and not switched off by
    ``text_ratio: 0`` or ``limit_val_batches: 0``); others may name shards written later or never. A fit whose
    validation never comes round (``val_check_interval`` past ``max_steps``) is still asked for its val shards."""
    wanted = {"fit": ["train_shards"] + (["text_shards"] if data.get("text_ratio") else [])
              + ([] if trainer.get("limit_val_batches") == 0 else ["val_shards"]),
              "validate": ["val_shards"], "test": ["test_shards"]}.get(subcommand or "", [])
    return [key for key in wanted if data.get(key) is not None]


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
        "bucket_window", "resampled", "rows_per_epoch", "sources", "train_shards")})
    trainer = config.get("trainer") or {}
    for key in shards_read(subcommand, data, trainer):  # a missing directory should not wait for the towers to load
        try:
            resolve_shards(data[key])
        except FileNotFoundError as e:
            raise FileNotFoundError(f"data.{key}: {e}") from e
    max_steps = trainer.get("max_steps")
    if subcommand == "fit" and (max_steps is None or max_steps <= 0):
        raise ValueError(f"trainer.max_steps={max_steps}: set a positive number of optimizer steps (the learning "
                         "rate schedule is defined over it)")
    refuse_ignored_trainer_options(trainer, subcommand)
    if subcommand == "fit":
        refuse_fresh_fit_over_a_run(Path(config.get("run_dir") or "runs/default"), config.get("ckpt_path"))
    every = config.get("progress_every")
    if every is not None and every < 1:
        raise ValueError(f"--progress_every={every}: print a progress line every N >= 1 optimizer steps")
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
