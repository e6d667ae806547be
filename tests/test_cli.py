import csv
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from lightning_helpers import SimulatedKill
from safetensors.torch import load_file
from shard_damage import damage, image_sample, text_sample, write_dir
from test_loader import bounded

from mmpeft import zoo
from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_towers
from mmpeft.checkpoint import load_pretrained
from mmpeft.cli import MMPeftCLI
from mmpeft.config_files import PACKAGED_DIR, packaged_configs, resolve_config, resolve_config_args
from mmpeft.data.integrity import PartialData
from mmpeft.data.pipeline import NoUsableRows

CONFIGS = ["trainer/cpu.yaml", "model/tiny.yaml", "data/tiny.yaml"]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return save_tiny_towers(tmp_path_factory.mktemp("tiny_cli"))


def fit_args(towers, run_dir, *extra, command="fit"):
    args = [command]
    for c in CONFIGS:
        args += ["--config", c]
    args += [
        f"--model.vlm.llm.init_args.name={towers / 'llm'}",
        f"--model.vlm.vision.init_args.name=local-dir:{towers / 'open_clip'}",
        f"--data.train_shards={towers / 'data' / 'train'}",
        f"--data.val_shards={towers / 'data' / 'val'}",
        f"--data.text_shards={towers / 'data' / 'text'}",
        f"--run_dir={run_dir}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
    ]
    return args + list(extra)


def losses(run_dir, key="train/loss"):
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r[key] for r in csv.DictReader(f) if r.get(key)}


def test_fit_writes_run_directory_and_exact_trainable_count(towers, tmp_path):
    run = tmp_path / "run"
    cli_main(fit_args(towers, run, "--config", "peft/lora_both.yaml", "--config", "guard/kl_text.yaml",
                      "--trainer.max_steps=4", "--checkpoint_every_n_steps=2",
                      "--model.vlm.vision_adapter.r=4", "--model.vlm.llm_adapter.r=8"))
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "trainability.md", "metrics.csv", "checkpoints",
                                                "hparams.yaml"}
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    table = (run / "trainability.md").read_text()
    # llm: 2 layers x r=8 x 1024; vision: open_clip ViT-Tiny block 0 MLP (feature_layer -2 prunes block 1), r=4
    assert "| llm | lora | 16,384 |" in table and "| vision | lora | 2,560 |" in table
    assert "| projector | full | 8,320 |" in table
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step=000002.ckpt",
                                                                       "step=000004.ckpt"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/task", "train/kl_to_base", "tokens_per_s"} <= set(header)
    # LearningRateMonitor: one column per parameter group, named by the group (not only group 0's as "lr")
    assert {k for k in header if k.startswith("lr")} == {"lr/projector", "lr/projector_no_decay", "lr/vision",
                                                          "lr/llm"}
    # every training checkpoint is also a loadable model directory holding trainable state only
    ckpt = run / "checkpoints" / "last.ckpt"
    model = load_pretrained(ckpt)
    state = load_file(ckpt / "lightning.safetensors")
    weights = {k for k in state if k.startswith("/state_dict/")}
    trainable = {f"/state_dict/vlm.{n}" for n, p in model.named_parameters() if p.requires_grad}
    assert weights == trainable
    cli_main(["export", str(ckpt), str(tmp_path / "export")])
    assert (tmp_path / "export" / "llm" / "model.safetensors").is_file()


def test_print_config_and_unknown_key(towers, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(towers, tmp_path, "--print_config"))
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: mmpeft.towers.OpenClipVisionTower" in printed and "text_ratio: 0.0" in printed
    with pytest.raises(ValueError, match=r"'rank' \(on the command line\) is not an argument of "
                                         r"mmpeft.adapters.AdapterSpec \(under model.vlm -> llm_adapter\)"):
        cli_main(fit_args(towers, tmp_path, "--model.vlm.llm_adapter.rank=4"))


def test_guard_without_text_rows_is_a_clear_error(towers, tmp_path):
    with pytest.raises(ValueError, match=r"acts on text-only rows but data.text_ratio is 0 and the train shards"):
        cli_main(fit_args(towers, tmp_path, "--config", "peft/lora_both.yaml", "--config",
                          "guard/kl_text.yaml", "--data.text_ratio=0", "--trainer.max_steps=1"))


def test_resume_after_kill_reproduces_losses_bitwise(towers, tmp_path):
    common = ["--config", "peft/lora_both.yaml", "--config", "guard/kl_text.yaml",
              "--model.vlm.llm_adapter.dropout=0.1", "--model.vlm.vision_adapter.dropout=0.1",
              "--trainer.max_steps=16", "--checkpoint_every_n_steps=6", "--trainer.limit_val_batches=0"]
    cli_main(fit_args(towers, tmp_path / "a", *common))
    reference = losses(tmp_path / "a")
    assert sorted(reference) == list(range(16)), "12 batches per epoch: the run crosses an epoch boundary"

    with pytest.raises(SimulatedKill):
        cli_main(fit_args(towers, tmp_path / "b", *common, "--trainer.callbacks+=lightning_helpers.KillAtStep",
                          "--trainer.callbacks.step=9"))
    assert (tmp_path / "b" / "checkpoints" / "step=000006.ckpt").is_dir()
    cli_main(fit_args(towers, tmp_path / "b", *common,
                      f"--ckpt_path={tmp_path / 'b' / 'checkpoints' / 'step=000006.ckpt'}"))
    resumed = losses(tmp_path / "b")
    for step in range(6, 16):
        assert resumed[step] == reference[step], f"step {step}: {resumed[step]} != {reference[step]}"


def test_stage2_initialises_from_stage1_projector(towers, tmp_path, caplog):
    stage1 = tmp_path / "stage1"
    cli_main(fit_args(towers, stage1, "--config", "peft/projector_only.yaml", "--trainer.max_steps=2"))
    projector = load_file(stage1 / "checkpoints" / "last.ckpt" / "trainable.safetensors")
    with caplog.at_level(logging.INFO, logger="mmpeft.stage_init"):  # init_from moved there from module.py
        cli = cli_main(fit_args(towers, tmp_path / "stage2", "--config", "peft/lora_both.yaml",
                                f"--model.init_from={stage1 / 'checkpoints' / 'last.ckpt'}",
                                "--trainer.max_steps=0", command="validate"))
    assert "initialised projector from" in caplog.text
    for k, v in projector.items():
        assert torch.equal(cli.model.vlm.state_dict()[k], v)
    with pytest.raises(ValueError, match=r"its projector does not fit this model.*mlp.0.weight"):
        cli_main(fit_args(towers, tmp_path / "bad", "--config", "peft/lora_both.yaml",
                          f"--model.init_from={stage1 / 'checkpoints' / 'last.ckpt'}",
                          "--model.vlm.projector.init_args.hidden_dim=32", command="validate"))


def test_fisher_command_then_ewc_training(towers, tmp_path):
    fisher = tmp_path / "fisher.safetensors"
    cli_main(fit_args(towers, tmp_path / "f", "--config", "peft/lora_both.yaml", "--output", str(fisher),
                      "--batches", "2", command="fisher"))
    saved = load_file(fisher)
    assert len(saved) == 14 and all((v >= 0).all() for v in saved.values())  # 7 projections x 2 layers
    run = tmp_path / "ewc"
    cli_main(fit_args(towers, run, "--config", "peft/lora_both.yaml", "--config", "guard/ewc.yaml",
                      f"--model.guards.init_args.fisher_path={fisher}", "--trainer.max_steps=3"))
    values = [float(v) for v in losses(run, "train/ewc").values()]
    assert values[0] == 0.0 and values[-1] > 0.0
    meta = json.loads((run / "checkpoints" / "last.ckpt" / "mmpeft_config.json").read_text())
    assert meta["extra"]["global_step"] == 3


@pytest.mark.parametrize("preset", [
    ["trainer/gpu_bf16.yaml", "model/clip-l336_vicuna-7b.yaml", "peft/projector_only.yaml",
     "data/llava_pretrain.yaml", "experiments/llava15_stage1.yaml"],
    ["trainer/gpu_bf16.yaml", "model/clip-l336_vicuna-7b.yaml", "peft/lora_both.yaml",
     "data/llava_mix665k.yaml", "experiments/llava15_stage2.yaml"],
    ["trainer/gpu_bf16.yaml", "model/siglip_smollm2-360m.yaml", "peft/dora_both.yaml",
     "data/llava_mix665k.yaml", "guard/replay.yaml", "guard/l2sp.yaml"],
])
def test_presets_parse(preset, capsys):
    args = ["fit"] + [x for c in preset for x in ("--config", c)] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 0
    assert "class_path: mmpeft.towers." in capsys.readouterr().out


def test_packed_rows_train_through_the_cli_with_the_padded_loss(towers, tmp_path):
    common = ("--config", "peft/lora_both.yaml", "--trainer.max_steps=2", "--model.vlm.llm_adapter.dropout=0",
              "--model.vlm.vision_adapter.dropout=0")
    cli_main(fit_args(towers, tmp_path / "padded", *common))
    cli_main(fit_args(towers, tmp_path / "packed", *common, "--model.vlm.pack_sequences=true"))
    padded, packed = losses(tmp_path / "padded"), losses(tmp_path / "packed")
    assert padded.keys() == packed.keys() and len(padded) == 2
    for step in padded:
        assert float(packed[step]) == pytest.approx(float(padded[step]), rel=1e-4)
    saved = load_pretrained(tmp_path / "packed" / "checkpoints" / "last.ckpt")
    assert saved.pack_sequences


def test_bf16_mixed_and_gradient_checkpointing_train_on_cpu(towers, tmp_path):
    """Towers are built in eval mode (frozen); training must still run the LLM in training mode, or adapter
    dropout and activation checkpointing silently do nothing."""
    run = tmp_path / "bf16"
    record = tmp_path / "modes.json"
    cli_main(fit_args(towers, run, "--config", "peft/lora_both.yaml", "--trainer.precision=bf16-mixed",
                      "--model.gradient_checkpointing=true", "--trainer.max_steps=2",
                      "--model.vlm.llm_adapter.dropout=0.1",
                      "--trainer.callbacks+=lightning_helpers.RecordTrainingModes",
                      f"--trainer.callbacks.path={record}"))
    values = [float(v) for v in losses(run).values()]
    assert len(values) == 2 and all(v == v and v > 0 for v in values)
    modes = json.loads(record.read_text())
    assert all(s["llm_training"] and s["adapter_dropout"] and all(s["adapter_dropout"]) for s in modes["steps"])
    # forward + recomputation in backward, per step (the first layer sees the one packed or padded batch)
    assert modes["calls"] == 2 * len(modes["steps"])


def test_fit_logs_lost_rows_per_epoch(towers, tmp_path):
    train = shutil.copytree(towers / "data" / "train", tmp_path / "train")
    damage(train / "shard-000003.tar", "cut_at_boundary", "000028")  # holds 000024-000031: 4 rows lost, quietly
    run = tmp_path / "run"
    cli_main(fit_args(towers, run, "--config", "peft/projector_only.yaml", f"--data.train_shards={train}",
                      "--trainer.max_steps=9", "--trainer.limit_val_batches=0"))  # 60 rows: 8 batches an epoch
    logged = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("data/lost")]
    assert len(logged) == 2, "one row per completed epoch, then the partial epoch 1 (stopped by max_steps) at the end"
    assert float(logged[0]["data/lost"]) == 4 and float(logged[0]["data/lost_truncated_shard"]) == 4
    assert float(logged[0]["data/rows"]) == 60 and float(logged[0]["data/skipped"]) == 0
    assert int(logged[1]["step"]) == 9 and float(logged[1]["data/rows"]) >= 8  # the one batch of epoch 1 (+ prefetch)


def test_fit_stops_at_once_when_no_row_is_usable(towers, tmp_path):
    """The bug this guards: every replay row over max_length made the resampled replay stream draw shards forever
    at 100% CPU, deaf to SIGTERM (Lightning only checks it between batches)."""
    write_dir(tmp_path / "long_text", 8, 4, lambda i: text_sample(i, words=300))
    with bounded(60), pytest.raises(NoUsableRows, match=r"(?s)train data gave no usable row.*too_long.*"
                                                        r"raise data.max_length, or set data.overlong=truncate"):
        cli_main(fit_args(towers, tmp_path / "run", "--config", "peft/projector_only.yaml",
                          f"--data.text_shards={tmp_path / 'long_text'}", "--data.text_ratio=0.5",
                          "--data.max_length=64", "--data.num_workers=2", "--trainer.max_steps=3"))


def damaged_eval_set(directory):
    """12 rows in 3 shards: 000009 over-long at max_length 128 (skipped), shard 0 cut before 000002 (2 rows lost)."""
    urls = write_dir(directory, 12, 4, lambda i: image_sample(i, words=300 if i == 9 else 0))
    damage(urls[0], "cut_at_boundary", "000002")
    return urls


@pytest.mark.parametrize("command", ["validate", "test", "fit"])
def test_evaluation_refuses_a_partial_set(towers, tmp_path, command):
    urls = damaged_eval_set(tmp_path / "eval")
    stage = "test" if command == "test" else "val"
    extra = ["--trainer.max_steps=1", "--trainer.val_check_interval=1"] if command == "fit" else []
    with pytest.raises(PartialData) as raised:
        cli_main(fit_args(towers, tmp_path / "run", "--config", "peft/projector_only.yaml",
                          f"--data.{stage}_shards={tmp_path / 'eval'}", "--data.max_length=128", *extra,
                          command=command))
    message = str(raised.value)
    assert message.startswith(f"refusing to score a partial {stage} set (epoch 0, 9 rows read): 1 sample(s) "
                              "skipped, 2 row(s) lost")
    assert f"{urls[0]} (truncated_shard: 2 rows lost); {urls[2]} (1 of 4 samples skipped)" in message
    assert "--data.allow_partial_eval=true" in message
    if command == "fit":
        assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists(), "the run stopped at the validation"


def test_validate_scores_a_partial_set_when_allowed_and_logs_its_counts(towers, tmp_path, caplog):
    damaged_eval_set(tmp_path / "eval")
    common = ("--config", "peft/projector_only.yaml", "--data.max_length=128")
    with caplog.at_level(logging.WARNING, logger="mmpeft.data.loader"):
        cli_main(fit_args(towers, tmp_path / "partial", *common, f"--data.val_shards={tmp_path / 'eval'}",
                          "--data.allow_partial_eval=true", command="validate"))
    assert "val data is partial (1 sample(s) skipped, 2 row(s) lost), scored anyway as allowed: 9 rows" in caplog.text
    cli_main(fit_args(towers, tmp_path / "clean", *common, command="validate"))  # the tiny val shards are whole
    for run, rows, skipped, lost in (("partial", 9, 1, 2), ("clean", 16, 0, 0)):
        logged = [r for r in csv.DictReader(open(tmp_path / run / "metrics.csv")) if r.get("val/data/rows")]
        assert len(logged) == 1 and logged[0]["val/loss"], run
        assert [float(logged[0][f"val/data/{k}"]) for k in ("rows", "skipped", "lost", "lost_truncated_shard")] == \
            [rows, skipped, lost, lost], run


def test_abbreviated_options_are_refused_not_guessed(towers, tmp_path, capsys):
    """argparse's default prefix matching took ``--trainer.max_step=5`` as ``--trainer.max_steps``: a misspelt
    option must be an error naming it, in ``fit`` and in every argparse subcommand."""
    with pytest.raises(ValueError, match=r"--trainer.max_step \(on the command line\) is not a fit option; did "
                                         r"you mean --trainer.max_steps( or|\?)"):
        cli_main(fit_args(towers, tmp_path, "--trainer.max_step=5", "--print_config"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", "ckpt", str(tmp_path / "out"), "--trust-remote"])
    assert exit_info.value.code == 2 and "--trust-remote" in capsys.readouterr().err


def test_every_argparse_parser_refuses_abbreviations():
    """Each ``argparse.ArgumentParser(...)`` in mmpeft, data_prep and benchmarks passes ``allow_abbrev=False``."""
    import ast

    root = Path(__file__).parents[1]
    missing = []
    for path in sorted([*(root / "mmpeft").rglob("*.py"), *(root / "data_prep").glob("*.py"),
                        *(root / "benchmarks").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == \
                    "ArgumentParser":
                flags = {k.arg: k.value for k in node.keywords}
                if not (isinstance(flags.get("allow_abbrev"), ast.Constant) and flags["allow_abbrev"].value is False):
                    missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not missing, f"ArgumentParser without allow_abbrev=False: {missing}"


def test_missing_shards_are_named_before_any_tower_loads(towers, tmp_path, monkeypatch):
    import functools

    from mmpeft.towers.llm import LLMTower

    @functools.wraps(LLMTower.__init__)  # keeps the signature jsonargparse reads (and caches)
    def no_towers(*args, **kwargs):
        raise AssertionError("a tower loaded before the data options were checked")

    monkeypatch.setattr(LLMTower, "__init__", no_towers)
    with pytest.raises(FileNotFoundError, match=r"data.val_shards: shard spec '.*nope' gives no readable shards"):
        cli_main(fit_args(towers, tmp_path / "run", f"--data.val_shards={tmp_path / 'nope'}"))


def test_a_misspelt_option_names_its_file_and_the_nearest_names(tmp_path, capsys):
    """The option, the --config file that sets it and what was probably meant, in one message (jsonargparse printed
    80 lines of usage, then the key without its file)."""
    base = stacked("trainer/cpu.yaml", "model/tiny.yaml", "data/tiny.yaml")
    typo = tmp_path / "mine.yaml"
    typo.write_text("data:\n  batchsize: 4\n")
    cases = [
        (["--config", str(typo)],
         rf"^data.batchsize \(in {typo}\) is not a fit option; did you mean data.batch_size( or|\?)"),
        (["--config", "{model: {lr: {projecter: 0.1}}}"],
         r"'projecter' \(in \{model.*\}\) is not an argument of mmpeft.optimization.LearningRates \(under model.lr\); "
         r"did you mean 'projector'( or|\?)"),
        (["--model.vlm.init_args.llm.init_args.nme=x"], r"'nme' \(on the command line\) is not an argument of "
         r"mmpeft.towers.LLMTower \(under model.vlm -> llm\); did you mean 'name'( or|\?)"),
        (["--data.batch_size=abc"], r"(?s)Parser key \"data.batch_size\".*Expected a <class 'int'>. Got value: abc\n"
         r"data.batch_size is set \(in .*data/tiny.yaml; on the command line\); the last one given wins"),
    ]
    for extra, says in cases:
        with pytest.raises(ValueError, match=says) as raised:
            cli_main(["fit", *base, *extra, "--print_config"])
        assert str(raised.value).endswith("(mmpeft fit --help lists the options; --print_config shows the merged "
                                          "config)")
    assert capsys.readouterr().err == "", "no usage text"
    with pytest.raises(ValueError, match=r"random_weights") as raised:  # a nested value: no outer key's files named
        cli_main(["fit", *base, "--model.vlm.init_args.llm.init_args.random_weights=maybe", "--print_config"])
    assert "the last one given wins" not in str(raised.value)


def stacked(*names):
    return [x for name in names for x in ("--config", name)]


def printed_config(capsys, *args):
    """The resolved ``fit`` config (``--print_config``) as a dict: parsing only, nothing is built."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_config_names_resolve_to_packaged_presets_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = PACKAGED_DIR / "model" / "tiny.yaml"
    assert resolve_config("model/tiny.yaml") == tiny
    assert resolve_config("configs/model/tiny.yaml") == tiny  # the spelling from before the presets moved
    inline = "{trainer: {max_steps: 3}}"
    assert resolve_config_args(["fit", "--config", "model/tiny.yaml", "--config=configs/guard/replay.yaml", "-c",
                                "trainer/cpu.yaml", "--config", inline, "--run_dir=model/tiny.yaml"]) == [
        "fit", "--config", str(tiny), f"--config={PACKAGED_DIR / 'guard' / 'replay.yaml'}", "-c",
        str(PACKAGED_DIR / "trainer" / "cpu.yaml"), "--config", inline, "--run_dir=model/tiny.yaml"]


def test_a_users_own_config_file_wins_over_the_packaged_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    mine = (PACKAGED_DIR / "model" / "tiny.yaml").read_text().replace("max_length: 128", "max_length: 77")
    (tmp_path / "model" / "tiny.yaml").write_text(mine)
    assert resolve_config("model/tiny.yaml") == Path("model/tiny.yaml")
    assert printed_config(capsys, *stacked("trainer/cpu.yaml", "model/tiny.yaml"))["data"]["max_length"] == 77


def test_an_unknown_config_name_is_an_error_listing_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        MMPeftCLI(["fit", "--config", "trainer/cpu.yaml", "--config", "model/tiyn.yaml"])
    message = str(raised.value)
    assert message.startswith("--config model/tiyn.yaml: no such file") and "Did you mean model/tiny.yaml" in message
    assert "guard/replay.yaml" in packaged_configs() and all(name in message for name in packaged_configs())


def test_stacked_guards_add_and_an_experiment_states_only_its_changes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ("trainer/cpu.yaml", "model/tiny.yaml", "peft/lora_both.yaml", "data/tiny.yaml")
    config = printed_config(capsys, *stacked(*base, "guard/kl_text.yaml", "guard/replay.yaml",
                                             "experiments/tiny_lora_kl.yaml"))
    assert [g["class_path"] for g in config["model"]["guards"]] == ["mmpeft.guards.KLToBase", "mmpeft.guards.Replay"]
    # the experiment sets ranks only: method, dropout and targets stay those of peft/lora_both.yaml
    experiment = yaml.safe_load(resolve_config("experiments/tiny_lora_kl.yaml").read_text())["model"]["vlm"]
    assert experiment["vision_adapter"] == {"r": 4, "alpha": 8}
    vision = config["model"]["vlm"]["init_args"]["vision_adapter"]
    assert (vision["method"], vision["r"], vision["alpha"], vision["dropout"]) == ("lora", 4, 8.0, 0.05)
    reordered = printed_config(capsys, *stacked(*base, "guard/replay.yaml", "guard/l2sp.yaml", "guard/kl_text.yaml"))
    assert [g["class_path"].rsplit(".", 1)[1] for g in reordered["model"]["guards"]] == ["Replay", "L2SP", "KLToBase"]


@pytest.mark.parametrize("option, named", [
    (["--optimizer=torch.optim.SGD", "--optimizer.lr=0.1"], "--optimizer"),
    (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR"], "--lr_scheduler"),
    (["--config", "opt.yaml"], "opt.yaml: key optimizer"),
])
def test_auto_configured_optimizers_are_refused_naming_mmpefts_options(tmp_path, monkeypatch, capsys, option, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt.yaml").write_text("optimizer:\n  class_path: torch.optim.SGD\n  init_args: {lr: 0.1}\n")
    with pytest.raises(ValueError) as raised:
        cli_main(["fit", *stacked("trainer/cpu.yaml", "model/tiny.yaml"), *option])
    message = str(raised.value)
    assert message.startswith(f"{named}: not an mmpeft option")
    assert all(k in message for k in ("model.lr.projector", "model.lr.llm", "model.weight_decay", "model.betas",
                                      "model.warmup_steps", "model.min_lr_ratio"))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    assert "--optimizer" not in capsys.readouterr().out


@pytest.mark.parametrize("option, message", [
    ("--trainer.default_root_dir=elsewhere", r"trainer.default_root_dir='elsewhere' would be ignored.*Set --run_dir"),
    ("--trainer.max_epochs=2", r"trainer.max_epochs=2: .*part-way through the learning-rate schedule"),
])
def test_trainer_options_mmpeft_would_override_are_refused(towers, tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        cli_main(fit_args(towers, tmp_path, option))


def test_disabled_checkpointing_is_honoured(towers, tmp_path):
    """mmpeft's own ModelCheckpoint used to make Lightning refuse trainer.enable_checkpointing=false."""
    cli = MMPeftCLI(fit_args(towers, tmp_path, "--trainer.enable_checkpointing=false")[1:], run=False)
    assert cli.trainer.checkpoint_callbacks == []


def test_packaged_tiny_configs_run_from_any_directory(tmp_path, monkeypatch):
    """model/tiny.yaml and data/tiny.yaml name zoo:tiny/...: what `mmpeft tiny-towers` writes to $MMPEFT_CACHE."""
    monkeypatch.setenv("MMPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    args = ["validate", *stacked(*CONFIGS), "--run_dir=run", "--trainer.enable_progress_bar=false"]
    # the data options are checked first (no tower loads before them)
    with pytest.raises(FileNotFoundError, match=r"data.val_shards: zoo:tiny/data/val: .* does not exist; it is "
                                                r"written by `mmpeft tiny-towers`"):
        cli_main(args)
    cli_main(["tiny-towers"])
    assert zoo.tiny_dir() == tmp_path / "cache" / "tiny" and (zoo.tiny_dir() / "llm" / "config.json").is_file()
    cli = cli_main(args)
    assert cli.model.vlm.llm.init_args["name"] == "zoo:tiny/llm"
    assert cli.model.vlm.vision.init_args["name"] == f"local-dir:{zoo.tiny_dir() / 'open_clip'}"
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_a_fresh_fit_into_a_finished_run_is_refused_and_resume_names_the_checkpoint(towers, tmp_path):
    """Before, a second fit without --ckpt_path trained from scratch beside the old run: last-v1.ckpt next to the
    old last.ckpt (which eval read) and its steps appended to the old metrics.csv."""
    run = tmp_path / "run"
    cli_main(fit_args(towers, run, "--trainer.max_steps=2", "--trainer.limit_val_batches=0"))
    before = (run / "metrics.csv").read_text()
    with pytest.raises(ValueError, match=rf"--run_dir={re.escape(str(run))} already holds a run .*Resume it with "
                                         rf"--ckpt_path={re.escape(str(run / 'checkpoints' / 'last.ckpt'))}"):
        cli_main(fit_args(towers, run, "--trainer.max_steps=2", "--trainer.limit_val_batches=0"))
    assert (run / "metrics.csv").read_text() == before and not list((run / "checkpoints").glob("last-v*"))
    cli_main(fit_args(towers, run, "--trainer.max_steps=3", "--trainer.limit_val_batches=0",
                      f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"))
    assert len(losses(run)) == 3, "the resumed run continued the same metrics.csv to step 3"
