"""Evaluation tasks behind one interface: built from YAML or flags alike, run by one loop that the CLI, the training
callback and Python share."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import build_vlm
from shard_damage import text_sample, write_dir

from mmpeft.apps.main import cli_main
from mmpeft.apps.tiny import save_tiny_shards
from mmpeft.callbacks.probes import ForgettingProbes
from mmpeft.checkpoint import save_trainable
from mmpeft.data.integrity import PartialData
from mmpeft.eval.config import load_eval_config
from mmpeft.eval.loop import evaluate
from mmpeft.eval.probe_files import PACKAGED_PROBES, probe_path
from mmpeft.eval.task import EvalContext, EvalTask, TaskResult
from mmpeft.eval.tasks import CaptionTask, TextProbeTask, VQATask
from mmpeft.eval.text_probes import PerplexityProbe
from mmpeft.zoo import tiny_dir


class ToyTask(EvalTask):
    """A benchmark written outside mmpeft: one class, named in YAML by its class_path (this module)."""

    def __init__(self, name: str = "toy", value: float = 1.0):
        self.name, self.value = name, value
        self.contexts: list[EvalContext] = []
        self.modes: list[bool] = []  # vlm.training when the task ran

    def run(self, vlm, context: EvalContext) -> TaskResult:
        self.contexts.append(context)
        self.modes.append(vlm.training)
        return TaskResult({"value": self.value, "training": vlm.training, "batch_size": context.batch_size},
                          [{"id": "only", "prediction": str(self.value)}])

    def summary(self, scores):
        return [f"toy value {scores['value']}"]


class CheckFails(EvalTask):
    name = "fails_check"

    def check(self):
        raise RuntimeError("the tool this task needs is missing")


@pytest.fixture
def model_dir(tiny, tmp_path):
    return save_trainable(build_vlm(tiny), tmp_path / "model", extra={"global_step": 7})


def test_packaged_yaml_gives_the_scores_of_the_flags(model_dir, tmp_path):
    save_tiny_shards(tiny_dir() / "data")  # where the packaged eval/tiny.yaml's zoo:tiny/data/val points
    common = ["eval", "--checkpoint", str(model_dir), "--limit", "4"]  # a flag setting applies to the file's tasks
    by_yaml = cli_main([*common, "--config", "eval/tiny.yaml", "--out", str(tmp_path / "yaml")])
    by_flags = cli_main([*common, "--vqa", "zoo:tiny/data/val", "--max-new-tokens", "4", "--ppl", "prose=v1/prose.txt",
                         "--out", str(tmp_path / "flags")])
    assert by_yaml == by_flags
    assert by_yaml["step"] == 7 and by_yaml["vqa"]["num_questions"] == 4 and by_yaml["missing"]["limit"] == 4
    assert set(by_yaml["text_probes"]) == {"prose"} and by_yaml["text_probes"]["prose"]["adapted"]["tokens"] > 500
    assert set(by_yaml["missing"]["by_task"]) == {"vqa"} and by_yaml["missing"]["missing_rows"] == 0
    lines = [(tmp_path / name).with_suffix(".predictions.jsonl").read_text() for name in ("yaml", "flags")]
    assert lines[0] == lines[1] and len(lines[0].splitlines()) == 4
    assert {json.loads(line)["task"] for line in lines[0].splitlines()} == {"vqa"}


def test_a_custom_task_runs_in_the_cli_and_in_the_training_callback(tiny, model_dir, tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"batch_size": 3, "tasks": [
        {"class_path": "test_eval_tasks.ToyTask", "init_args": {"name": "toy", "value": 2.5}}]}))
    scores = cli_main(["eval", "--checkpoint", str(model_dir), "--config", str(config), "--out", str(tmp_path / "o")])
    assert scores["toy"] == {"value": 2.5, "training": False, "batch_size": 3}, "the config's settings reach it"
    assert "toy value 2.5" in capsys.readouterr().out
    assert json.loads((tmp_path / "o.predictions.jsonl").read_text()) == {"id": "only", "prediction": "2.5",
                                                                           "task": "toy"}
    # the callback: the same task object type, the same loop (eval mode inside, the training mode restored after)
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[Callback])  # as LightningCLI builds trainer.callbacks
    parsed = parser.parse_object({"callbacks": [{"class_path": "mmpeft.callbacks.probes.ForgettingProbes",
                                                 "init_args": {"batch_size": 5, "tasks": [
                                                     {"class_path": "test_eval_tasks.ToyTask",
                                                      "init_args": {"value": 4.0}}]}}]})
    [callback] = parser.instantiate_classes(parsed).callbacks
    [toy] = callback.tasks
    vlm = build_vlm(tiny)
    vlm.train()
    logged = []
    trainer = SimpleNamespace(global_step=2, is_global_zero=True,
                              loggers=[SimpleNamespace(log_metrics=lambda m, step: logged.append((step, m)))])
    callback._run(trainer, SimpleNamespace(vlm=vlm))
    assert logged == [(2, {"probe/toy/value": 4.0, "probe/toy/batch_size": 5.0})], "numbers are logged, not flags"
    assert toy.modes == [False] and vlm.training, "eval mode inside the loop, training mode restored after it"
    [context] = toy.contexts
    assert context.allow_partial and context.allow_empty and not context.progress


def test_every_check_runs_before_any_task(tiny, monkeypatch):
    save_tiny_shards(tiny_dir() / "data")
    first = ToyTask()
    with pytest.raises(RuntimeError, match="the tool this task needs is missing"):
        evaluate(build_vlm(tiny), [first, CheckFails()])
    assert first.contexts == [], "nothing ran"
    monkeypatch.setattr("mmpeft.eval.captioning.java_available", lambda: False)
    with pytest.raises(RuntimeError, match="java"):  # the caption tokenizer is checked before generating
        evaluate(build_vlm(tiny), [first, CaptionTask(str(tiny_dir() / "data" / "val"), tokenizer="ptb")])
    with pytest.raises(FileNotFoundError, match="shard spec 'nowhere' gives no readable shards"):
        evaluate(build_vlm(tiny), [first, VQATask("nowhere")])
    assert first.contexts == []


def test_task_names_must_be_distinct_and_not_the_files_own_keys(tiny, tmp_path):
    vlm = build_vlm(tiny)
    with pytest.raises(ValueError, match="two tasks are named 'toy'"):
        evaluate(vlm, [ToyTask(), ToyTask()])
    with pytest.raises(ValueError, match="'missing' is reserved"):
        evaluate(vlm, [ToyTask("missing")])
    with pytest.raises(ValueError, match="is not an evaluation task"):
        evaluate(vlm, [PerplexityProbe("p", str(PACKAGED_PROBES / "v1" / "prose.txt"))])
    with pytest.raises(ValueError, match=r"probe names \['a'\] appear more than once"):
        TextProbeTask([PerplexityProbe("a", "v1/prose.txt"), PerplexityProbe("a", "v1/prose.txt")])


@pytest.mark.parametrize("entry, message", [
    ({"class_path": "mmpeft.eval.tasks.VQATask", "init_args": {"shards": "x", "max_tokens": 3}},
     "max_tokens"),
    ({"class_path": "mmpeft.guards.KLToBase"}, "mmpeft.guards.KLToBase"),
    ({"class_path": "mmpeft.eval.tasks.TextProbeTask", "init_args": {"probes": [
        {"class_path": "mmpeft.eval.text_probes.PerplexityProbe", "init_args": {"name": "p", "path": "nope.txt"}}]}},
     "probe file nope.txt not found"),
])
def test_a_bad_eval_config_names_the_file(tmp_path, entry, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"tasks": [entry]}))
    with pytest.raises((ValueError, FileNotFoundError), match=rf"(?s)eval config {config}:.*{message}"):
        load_eval_config([str(config)])


def test_eval_configs_stack_tasks_add_settings_override(tmp_path):
    files = []
    for i, settings in enumerate(({"batch_size": 4, "limit": 9}, {"batch_size": 2})):
        files.append(tmp_path / f"c{i}.yaml")
        files[-1].write_text(yaml.safe_dump({**settings, "tasks": [
            {"class_path": "test_eval_tasks.ToyTask", "init_args": {"name": f"t{i}"}}]}))
    config = load_eval_config([str(f) for f in files])
    assert [t.name for t in config.tasks] == ["t0", "t1"] and config.settings == {"batch_size": 2, "limit": 9}


def test_training_probe_with_no_question_left_logs_what_was_missing(tiny, tmp_path):
    """Every row of the probe's shards is a plain-text record (nothing to ask): the callback logs 0 questions and
    the missing rows, and no accuracy; ``mmpeft eval`` (allow_empty off) refuses."""
    write_dir(tmp_path / "text", 4, 2, text_sample)
    vlm = build_vlm(tiny)
    logged = []
    trainer = SimpleNamespace(global_step=0, is_global_zero=True,
                              loggers=[SimpleNamespace(log_metrics=lambda m, step: logged.append(m))])
    ForgettingProbes(vqa_shards=str(tmp_path / "text"))._run(trainer, SimpleNamespace(vlm=vlm))
    assert logged == [{"probe/vqa/questions": 0.0, "probe/vqa/missing": 4.0, "probe/vqa/damaged_shards": 0.0}]
    with pytest.raises(PartialData, match=r"no vqa sample left to score.*skipped no_prompt: 4"):
        evaluate(vlm, [VQATask(str(tmp_path / "text"))], allow_partial=True)


def test_packaged_demo_eval_is_the_demo_s_evaluation(tmp_path, monkeypatch):
    """``configs/eval/demo.yaml`` builds, from any directory, the tasks ``mmpeft demo`` runs on the data it writes to
    ``$MMPEFT_CACHE/demo-data`` (named ``zoo:demo-data/...``)."""
    from mmpeft.apps.demo import eval_tasks
    from mmpeft.zoo import cache_root, resolve

    data = cache_root() / "demo-data"
    (data / "shapes-v1" / "seed0" / "test_vqa").mkdir(parents=True, exist_ok=True)
    (data / "shapes-v1" / "seed0" / "test_captions").mkdir(parents=True, exist_ok=True)
    (data / "pydoc_probe.jsonl").write_text(json.dumps({"text": "held-out pydoc text"}) + "\n")
    monkeypatch.chdir(tmp_path)  # not the data's directory
    config = load_eval_config(["eval/demo.yaml"])
    paths = {"bench": data / "shapes-v1" / "seed0", "pydoc_probe": data / "pydoc_probe.jsonl"}

    def described(task):
        out = {"class": type(task).__name__, **{k: v for k, v in vars(task).items() if k not in ("probes", "shards")}}
        if "shards" in vars(task):
            out["shards"] = Path(resolve(task.shards)).resolve()
        out["probes"] = [{**vars(p), "path": probe_path(p.path).resolve(), "class": type(p).__name__}
                         for p in getattr(task, "probes", [])]
        return out

    assert [described(t) for t in config.tasks] == [described(t) for t in eval_tasks(paths, quick=False)]
    assert config.settings == {"batch_size": 32}, "evaluate_run's batch size"


def test_lm_eval_flags_build_a_task_that_runs_the_bridge_with_the_evaluation_settings(tiny, monkeypatch):
    """The bridge itself is tested in test_eval_probes.py (real lm-eval); here: the flags' task and the loop."""
    from mmpeft.eval.run import flag_tasks, parser

    calls = []

    def bridge(vlm, tasks, include_path, batch_size, limit):
        calls.append((tasks, include_path, batch_size, limit))
        return {"arith": {"adapted": {"acc": 0.5}, "base": {"acc": 0.25}, "delta": {"acc": 0.25}}}

    monkeypatch.setattr("mmpeft.eval.lm_eval_bridge.lm_eval_compare", bridge)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # lm-eval "installed"
    args = parser().parse_args(["--checkpoint", "x", "--lm-eval-tasks", "arith", "--lm-eval-include", "yamls"])
    [task] = flag_tasks(args)
    scores, _ = evaluate(build_vlm(tiny), [task], batch_size=3, limit=5)
    assert calls == [(["arith"], "yamls", 3, 5)] and scores["lm_eval"]["arith"]["delta"] == {"acc": 0.25}
    assert task.curve_metrics(scores["lm_eval"]) == {"lm_eval/arith/acc": 0.5, "lm_eval/arith/acc_delta": 0.25}
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(RuntimeError, match="lm-evaluation-harness, which is not installed"):
        task.check()


def test_an_eval_config_error_of_a_kind_without_a_message_constructor_stays_clear(tmp_path):
    """A probe file that is not UTF-8 raises UnicodeDecodeError, which cannot be rebuilt from a message: the error
    still names the eval config (a ValueError), not a TypeError from the re-raise."""
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"tasks": [{"class_path": "mmpeft.eval.tasks.TextProbeTask", "init_args": {
        "probes": [{"class_path": "mmpeft.eval.text_probes.PerplexityProbe",
                    "init_args": {"name": "p", "path": str(tmp_path / "latin1.txt")}}]}}]}))
    with pytest.raises(ValueError, match=rf"eval config {config}:"):
        load_eval_config([str(config)])


def test_caption_tokenizer_flag_overrides_the_caption_tasks_of_eval_configs(tmp_path):
    """`mmpeft eval --config eval/demo.yaml --caption-tokenizer python` on a machine without java: the packaged
    config says tokenizer: ptb; the flag replaces it (it once applied to --captions only, so such evals failed)."""
    from mmpeft.eval.config import load_eval_config
    from mmpeft.eval.run import parser, with_caption_tokenizer

    (tmp_path / "caps").mkdir()
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"tasks": [{"class_path": "mmpeft.eval.tasks.CaptionTask", "init_args": {
        "shards": str(tmp_path / "caps"), "tokenizer": "ptb"}}]}))
    tasks = load_eval_config([str(config)]).tasks
    captions = [t for t in tasks if isinstance(t, CaptionTask)]
    assert captions and all(t.tokenizer == "ptb" for t in captions)
    assert parser().parse_args(["--checkpoint", "x"]).caption_tokenizer is None  # no flag: the config's choice
    with_caption_tokenizer(tasks, None)
    assert all(t.tokenizer == "ptb" for t in captions)
    with_caption_tokenizer(tasks, "python")
    assert all(t.tokenizer == "python" for t in captions)
