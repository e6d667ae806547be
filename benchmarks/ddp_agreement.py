"""Does an N-process data-parallel run train like one process with N times the batch? (issue 19, item 2)

Three fits of the embedded real towers (SmolLM2-135M-Instruct + EfficientNet-Lite0, the demo's data and LoRA
recipe) with replay and the KL guard, through the ``mmpeft`` CLI:

- ``ddp``: N processes (DDP; gloo on the CPU, NCCL on GPUs) at B rows per rank, seed 0;
- ``single``: one process at N x B rows, seed 0;
- ``single_seed1``: the same, seed 1: another data order and initialisation, the scale of run-to-run noise.

Data parallelism reads other rows in another order than one process does, so the curves cannot be identical;
they agree "within noise" when the DDP run differs from ``single`` by about as much as ``single_seed1`` does.
Printed: the smoothed training-loss curves' relative differences (largest over the run, mean of the last
quarter), how many of rank 0's batches held no image row (the run finished: no rank hung on them), and the
evaluation of each run's last checkpoint, loaded in one process. ``train/loss`` under DDP is the global batch's
(``VLMModule`` logs the mean of the ranks' shares).

    python benchmarks/ddp_agreement.py --accelerator cpu --devices 2 --batch 4 --steps 60      # 2 CPU processes
    python benchmarks/ddp_agreement.py --accelerator gpu --devices 2 --batch 8 --steps 200     # 2 GPUs

Writes ``<workdir>/ddp_agreement.json``; each run is an ordinary run directory under ``<workdir>``.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--devices", type=int, default=2, help="processes of the data-parallel run")
    p.add_argument("--batch", type=int, default=4, help="rows per rank and step (the single runs: devices x this)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--text-ratio", type=float, default=0.25, help="share of text-only replay rows")
    p.add_argument("--eval-config", default="docs/studies/eval_cpu.yaml")
    p.add_argument("--workdir", default="runs/ddp_agreement")
    args = p.parse_args()
    work = (ROOT / args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    plan = {"ddp": (0, args.batch, args.devices), "single": (0, args.batch * args.devices, 1),
            "single_seed1": (1, args.batch * args.devices, 1)}
    threads = max(1, (os.cpu_count() or 1) // args.devices) if args.accelerator == "cpu" else 4
    seconds = {}
    for name, (seed, batch, devices) in plan.items():
        run_dir = work / name
        if not (run_dir / "checkpoints" / "last.ckpt").exists():
            seconds[name] = run(fit_command(args, run_dir, seed, batch, devices), work / f"{name}.fit.log",
                                threads if devices > 1 else max(1, os.cpu_count() or 1))
        if not (run_dir / "eval" / "results.json").exists():
            run(eval_command(args, run_dir), work / f"{name}.eval.log", os.cpu_count() or 1)
    curves = {name: metrics(work / name) for name in plan}
    for name, (loss, _) in curves.items():
        if len(loss) != args.steps:
            sys.exit(f"{work / name / 'metrics.csv'}: {len(loss)} logged training steps, expected {args.steps}")
    report = {
        "args": vars(args),
        "fit_seconds": seconds,
        "ddp_vs_single": relative_difference(curves["ddp"][0], curves["single"][0]),
        "single_seed1_vs_single": relative_difference(curves["single_seed1"][0], curves["single"][0]),
        "steps": args.steps,
        "final_loss_smoothed": {name: float(smooth(loss)[-1]) for name, (loss, _) in curves.items()},
        # rank batches without an image row (each rank still runs its vision tower then, so no collective waits)
        "image_free_rank_batches": {name: int(round(float(np.sum(free)) * plan[name][2]))
                                    for name, (_, free) in curves.items()},
        "scores": {name: scores(work / name) for name in plan},
    }
    (work / "ddp_agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    a, b = report["ddp_vs_single"], report["single_seed1_vs_single"]
    print(f"\n{args.devices} x {args.batch} rows (DDP, {args.accelerator}) against 1 x {args.devices * args.batch}, "
          f"{args.steps} steps, replay + KL, text-only share {args.text_ratio}")
    print("| comparison | largest smoothed relative loss difference | mean over the last quarter |")
    print("| --- | ---: | ---: |")
    print(f"| ddp vs single (seed 0) | {100 * a['max_abs']:.1f}% | {100 * a['last_quarter']:+.1f}% |")
    print(f"| single seed 1 vs single seed 0 (noise scale) | {100 * b['max_abs']:.1f}% | "
          f"{100 * b['last_quarter']:+.1f}% |")
    print("image-free rank batches: " + ", ".join(f"{n} {v}" for n, v in report["image_free_rank_batches"].items())
          + f" (of {args.steps} steps x ranks); every run finished")
    keys = sorted(set().union(*(s.keys() for s in report["scores"].values())))
    print("\n| metric | " + " | ".join(plan) + " |")
    print("| --- |" + " ---: |" * len(plan))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{report['scores'][n].get(key, float('nan')):.2f}" for n in plan) + " |")
    print(f"\nwrote {work / 'ddp_agreement.json'}")


if __name__ == "__main__":
    main()
