"""The demo's recipe is stacked configs (``configs/experiments/demo_plain.yaml``, ``demo_kl.yaml``): what
``mmpeft demo`` trains is the ``mmpeft fit`` command those files document, as the CLI's own parser resolves both,
and the command file it writes is the command it runs. (``tests/test_demo.py`` re-runs a written command and
compares the weights with the demo's.)"""

import re
import shlex
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from mmpeft.apps import demo
from mmpeft.cli import MMPeftCLI
from mmpeft.zoo import cache_root


def recipe_paths() -> dict[str, Path]:
    """Where ``mmpeft demo`` writes the recipe's data (seed 0, not --quick): what the files name zoo:demo-data/..."""
    data = cache_root() / "demo-data"
    return {"bench": data / "shapes-v1" / "seed0", "replay": data / "replay-pydoc-8w"}
EXPERIMENTS = files("mmpeft") / "configs" / "experiments"


class ParseOnly(MMPeftCLI):
    """The CLI's parsing and config stacking, building nothing (the comparison needs no tower)."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def resolved(args: list[str]) -> dict:
    assert args[0] == "fit"
    config = ParseOnly(args=args[1:], run=False).config.as_dict()
    config.pop("config")  # the files themselves: how the values were stacked, not what they are
    return config


def documented_command(arm: str, run_dir: Path) -> list[str]:
    """The ``mmpeft fit`` command at the top of ``experiments/demo_<arm>.yaml``, RUN filled in."""
    comments = [line[1:].strip() for line in (EXPERIMENTS / f"demo_{arm}.yaml").read_text().splitlines()
                if line.startswith("#")]
    start = next(i for i, line in enumerate(comments) if line.startswith("mmpeft fit "))
    command = []
    for line in comments[start:]:
        command.append(line.removesuffix("\\"))
        if not line.endswith("\\"):
            break
    return [re.sub(r"\bRUN\b", str(run_dir), word)
            for word in shlex.split(" ".join(command))[1:]]


@pytest.mark.parametrize("arm", ["plain", "kl"])
def test_the_demo_trains_the_fit_command_its_experiment_file_documents(arm, tmp_path):
    by_hand = documented_command(arm, tmp_path / arm)
    assert [by_hand[i + 1] for i, word in enumerate(by_hand) if word == "--config"] == list(demo.RECIPES[arm])
    ours = demo.train_args(arm, arm, tmp_path, recipe_paths(), demo.RECIPE_STEPS, demo.RECIPE_BATCH, quick=False,
                           seed=0)
    assert resolved(ours) == resolved(by_hand + demo.watch_args(tmp_path / arm))


def test_quick_and_other_steps_change_only_steps_batch_and_probe_budget(tmp_path):
    full = resolved(demo.train_args("kl", "kl", tmp_path, recipe_paths(), demo.RECIPE_STEPS, demo.RECIPE_BATCH, False))
    quick = resolved(demo.train_args("kl", "kl", tmp_path, recipe_paths(), 4, 4, True))
    assert (quick["trainer"]["max_steps"], quick["checkpoint_every_n_steps"], quick["data"]["batch_size"]) == (4, 4, 5)
    probe = quick["trainer"]["callbacks"][0]["init_args"]
    assert (probe["every_n_steps"], probe["probes"][0]["init_args"]["max_tokens"]) == (2, 512)
    for config in (full, quick):
        config["trainer"].pop("max_steps"), config.pop("checkpoint_every_n_steps"), config["data"].pop("batch_size")
        probe = config["trainer"]["callbacks"][0]["init_args"]
        probe.pop("every_n_steps"), probe["probes"][0]["init_args"].pop("max_tokens")
    assert quick == full


def test_the_demos_recipe_numbers_are_the_experiment_files():
    plain = yaml.safe_load((EXPERIMENTS / "demo_plain.yaml").read_text())
    kl = yaml.safe_load((EXPERIMENTS / "demo_kl.yaml").read_text())
    assert (plain["trainer"]["max_steps"], plain["data"]["batch_size"]) == (demo.RECIPE_STEPS, demo.RECIPE_BATCH)
    assert kl["data"] == {"text_ratio": demo.TEXT_RATIO, "text_shards": "zoo:demo-data/replay-pydoc-8w",
                          "batch_size": round(demo.RECIPE_BATCH / (1 - demo.TEXT_RATIO))}
    assert plain["data"]["train_shards"] == "zoo:demo-data/shapes-v1/seed0/train"


def test_the_command_file_holds_the_exact_arguments_and_threads(tmp_path):
    args = ["fit", "--config", "model/demo.yaml", f"--run_dir={tmp_path / 'a run'}", "--data.system_prompt=it's \"x\""]
    line = demo.write_command(tmp_path, args, threads=3)
    assert line.startswith("OMP_NUM_THREADS=3 mmpeft fit ")
    assert (tmp_path / demo.COMMAND_FILE).read_text().splitlines()[-1] == line
    assert demo.read_command(tmp_path / demo.COMMAND_FILE) == args
    (tmp_path / "empty.txt").write_text("# nothing to run\n")
    with pytest.raises(ValueError, match="empty.txt: no `mmpeft ...` command line"):
        demo.read_command(tmp_path / "empty.txt")
