"""Does an N-process data-parallel run train like one process with N times the batch? (issue 19, item 2)

Fits of the embedded real towers (SmolLM2-135M-Instruct + EfficientNet-Lite0, the demo's data and LoRA recipe)
with replay and the KL guard, through the ``mmpeft`` CLI, for each seed 0 .. S-1:

- ``ddp_seedK``: N processes (DDP; gloo on the CPU, NCCL on GPUs) at B rows per rank;
- ``single_seedK``: one process at N x B rows (the same global batch, the same initial weights).

Data parallelism reads other rows in another order than one process does, so the curves cannot be identical;
they agree "within noise" when the differences between the two arms are of the size of the differences between
seeds. Each run's final training loss is the mean of its raw ``train/loss`` over the last quarter of the steps
(under DDP the global batch's: ``VLMModule`` logs the mean of the ranks' shares); per arm: the mean over seeds and
its 95% t interval; DDP minus single: the mean of the per-seed (paired) differences and its 95% t interval, for
the final loss, VQA and the text perplexity change. Also printed: the smoothed curves' largest relative difference
per seed pair next to that between single runs of different seeds, and how many rank batches held no image row
(the runs finished: no rank hung on them). Every run's last checkpoint is evaluated in one process.

    python benchmarks/ddp_agreement.py --accelerator cpu --devices 2 --batch 4 --steps 200 --seeds 3   # 2 CPU procs
    python benchmarks/ddp_agreement.py --accelerator gpu --devices 2 --batch 8 --steps 200 --seeds 3   # 2 GPUs

The demo's data (``mmpeft demo``'s synthetic benchmark, replay corpus and probes) is written first where it is not
in the cache yet. Writes ``<workdir>/ddp_agreement.json``; each run is an ordinary run directory under
``<workdir>`` (finished fits and evals are kept, so an interrupted call resumes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOW, SKIP = 5, 4  # moving average over 5 logged steps; the first 4 smoothed points (loss falls fast) left out


def fit_command(args, run_dir: Path, seed: int, batch: int, devices: int) -> list[str]:
    trainer = ["--config", "trainer/cpu.yaml"] if args.accelerator == "cpu" else [
        "--config", "trainer/gpu_bf16.yaml", "--model.compile_llm_layers=false"]
    if devices > 1:
        trainer += ["--config", "trainer/ddp_cpu.yaml" if args.accelerator == "cpu" else "trainer/ddp.yaml",
                    f"--trainer.devices={devices}"]
    elif args.accelerator == "gpu":
        trainer += ["--trainer.devices=1"]
    return [sys.executable, "-m", "mmpeft.apps.main", "fit", *trainer,
            "--config", "model/demo.yaml", "--config", "peft/demo.yaml", "--config", "experiments/demo_plain.yaml",
            "--config", "guard/replay.yaml", "--config", "guard/kl_text.yaml",
            "--data.text_shards=zoo:demo-data/replay-pydoc-8w", f"--data.text_ratio={args.text_ratio}",
            f"--data.batch_size={batch}", f"--trainer.max_steps={args.steps}", "--trainer.log_every_n_steps=1",
            f"--checkpoint_every_n_steps={args.steps}", "--trainer.enable_progress_bar=false",
            f"--seed_everything={seed}", f"--data.seed={seed}", f"--run_dir={run_dir}"]


def eval_command(args, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mmpeft.apps.main", "eval", "--checkpoint", str(run_dir / "checkpoints" /
            "last.ckpt"), "--config", args.eval_config,
            *(["--caption-tokenizer", "python"] if args.accelerator == "gpu" else [])]


def run(command: list[str], log: Path, threads: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(command) + "\n")
        f.flush()
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"{command[3]} failed (exit {done.returncode}); its output: {log}")
    return time.perf_counter() - start


def metrics(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(train/loss, train/image_free_batches)`` per step, from the run's metrics.csv (the second: the share of
    ranks whose batch held no image row)."""
    with open(run_dir / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}
    steps = sorted(rows)
    return (np.array([float(rows[s]["train/loss"]) for s in steps]),
            np.array([float(rows[s]["train/image_free_batches"]) for s in steps]))


def smooth(values: np.ndarray) -> np.ndarray:
    padded = np.pad(values, WINDOW // 2, mode="edge")
    return np.convolve(padded, np.ones(WINDOW) / WINDOW, mode="valid")


def relative_difference(curve: np.ndarray, reference: np.ndarray) -> dict:
    rel = (smooth(curve) - smooth(reference)) / smooth(reference)
    return {"max_abs": float(np.max(np.abs(rel[SKIP:]))), "last_quarter": float(np.mean(rel[-len(rel) // 4:]))}


def scores(run_dir: Path) -> dict:
    """VQA overall and per question type, and each text probe's adapted and base value, from ``mmpeft eval``'s
    ``eval/last.json``."""
    results = json.loads((run_dir / "eval" / "last.json").read_text())
    flat = {"vqa/overall": results["vqa"]["overall"]}
    flat.update({f"vqa/{k}": v for k, v in results["vqa"].get("per_question_type", {}).items()})
    for probe, value in results.get("text_probes", {}).items():
        for side in ("adapted", "base"):
            for metric in ("perplexity", "acc"):
                if metric in value.get(side, {}):
                    flat[f"{probe}/{side}/{metric}"] = value[side][metric]
    return flat


def interval(values) -> tuple[float, float]:
    """``(mean, half-width of the 95% t interval)`` of ``values`` across seeds, as ``mmpeft report`` computes it
    (``seed_summary``); a nan half-width for one value."""
    from mmpeft.eval.sweep_stats import seed_summary

    summary = seed_summary([float(v) for v in values])
    return summary["mean"], float("nan") if summary["half_width"] is None else summary["half_width"]


def final_loss(loss: np.ndarray) -> float:
    """Mean raw training loss over the last quarter of the steps."""
    return float(np.mean(loss[-max(1, len(loss) // 4):]))


def perplexity_change(flat: dict) -> float:
    """Held-out pydoc perplexity of the adapted LLM relative to its base, in percent."""
    return 100.0 * (flat["ppl_pydoc_heldout/adapted/perplexity"] / flat["ppl_pydoc_heldout/base/perplexity"] - 1.0)


def summary(per_run: dict[str, dict[str, float]], seeds: list[int]) -> dict:
    """Per arm mean ± half-width and the paired DDP - single difference of every per-run measure."""
    out = {}
    for measure in next(iter(per_run.values())):
        ddp = [per_run[f"ddp_seed{k}"][measure] for k in seeds]
        single = [per_run[f"single_seed{k}"][measure] for k in seeds]
        out[measure] = {"ddp": interval(ddp), "single": interval(single),
                        "ddp_minus_single": interval(np.subtract(ddp, single))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--devices", type=int, default=2, help="processes of the data-parallel run")
    p.add_argument("--batch", type=int, default=4, help="rows per rank and step (the single runs: devices x this)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--text-ratio", type=float, default=0.25, help="share of text-only replay rows")
    p.add_argument("--eval-config", default="docs/studies/eval_cpu.yaml")
    p.add_argument("--workdir", default="runs/ddp_agreement")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. S-1 of each arm (at least 2 for intervals)")
    args = p.parse_args()
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # the runs read zoo:demo-data/...: write it as `mmpeft demo` does (reused when present)
    from mmpeft import zoo
    from mmpeft.apps.demo_data import prepare_data

    prepare_data(zoo.cache_root() / "demo-data", quick=False, seed=0)
    seeds = list(range(args.seeds))
    plan = {}
    for seed in seeds:
        plan[f"ddp_seed{seed}"] = (seed, args.batch, args.devices)
        plan[f"single_seed{seed}"] = (seed, args.batch * args.devices, 1)
    threads = max(1, (os.cpu_count() or 1) // args.devices) if args.accelerator == "cpu" else 4
    seconds = {}
    for name, (seed, batch, devices) in plan.items():
        run_dir = work / name
        if not (run_dir / "checkpoints" / "last.ckpt").exists():
            seconds[name] = run(fit_command(args, run_dir, seed, batch, devices), work / f"{name}.fit.log",
                                threads if devices > 1 else max(1, os.cpu_count() or 1))
        if not (run_dir / "eval" / "last.json").exists():  # mmpeft eval writes eval/<checkpoint>.json
            run(eval_command(args, run_dir), work / f"{name}.eval.log", os.cpu_count() or 1)
    curves = {name: metrics(work / name) for name in plan}
    for name, (loss, _) in curves.items():
        if len(loss) != args.steps:
            sys.exit(f"{work / name / 'metrics.csv'}: {len(loss)} logged training steps, expected {args.steps}")
    run_scores = {name: scores(work / name) for name in plan}
    per_run = {name: {"final_loss": final_loss(curves[name][0]), "vqa_overall": run_scores[name]["vqa/overall"],
                      "ppl_change_pct": perplexity_change(run_scores[name])} for name in plan}
    report = {
        "args": vars(args),
        "fit_seconds": seconds,
        "steps": args.steps,
        "per_run": per_run,
        "summary": summary(per_run, seeds),
        "ddp_vs_single_same_seed": {k: relative_difference(curves[f"ddp_seed{k}"][0], curves[f"single_seed{k}"][0])
                                    for k in seeds},
        "single_vs_single_seed0": {k: relative_difference(curves[f"single_seed{k}"][0], curves["single_seed0"][0])
                                   for k in seeds[1:]},
        # rank batches without an image row (each rank still runs its vision tower then, so no collective waits)
        "image_free_rank_batches": {name: int(round(float(np.sum(free)) * plan[name][2]))
                                    for name, (_, free) in curves.items()},
        "scores": run_scores,
    }
    (work / "ddp_agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.devices} x {args.batch} rows (DDP, {args.accelerator}) against 1 x {args.devices * args.batch}, "
          f"{args.steps} steps, replay + KL, text-only share {args.text_ratio}, seeds {seeds}")
    print("| measure | DDP | single | DDP - single (paired by seed) |")
    print("| --- | ---: | ---: | ---: |")
    for measure, row in report["summary"].items():
        print(f"| {measure} | " + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in
                                             (row["ddp"], row["single"], row["ddp_minus_single"])) + " |")
    print("\nlargest smoothed relative loss difference: DDP vs single, same seed: "
          + ", ".join(f"seed {k} {100 * v['max_abs']:.1f}%" for k, v in report["ddp_vs_single_same_seed"].items())
          + "; single seed k vs seed 0: "
          + ", ".join(f"seed {k} {100 * v['max_abs']:.1f}%" for k, v in report["single_vs_single_seed0"].items()))
    print("image-free rank batches: " + ", ".join(f"{n} {v}" for n, v in report["image_free_rank_batches"].items())
          + f" (of {args.steps} steps x ranks); every run finished")
    print(f"\nwrote {work / 'ddp_agreement.json'}")


if __name__ == "__main__":
    main()
