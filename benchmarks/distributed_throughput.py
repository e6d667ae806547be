#!/usr/bin/env python
"""Training throughput of mmpeft on 1..N GPUs (single device, DDP, FSDP) at a given model shape.

Builds the towers with random weights (no downloads): a timm vision tower and a Llama-shaped LLM (``--shapes``,
the presets of ``train_throughput.py``, or ``--hidden``/``--layers``/...), LoRA in the LLM, an MLP projector, then
trains ``--steps`` steps of synthetic batches through ``VLMModule`` with Lightning and reports, for the global
batch: real tokens/s (median over steps after warm-up, tokens summed over the ranks), tokens/s per GPU, and peak
GPU memory per device. Rank 0 prints a table row and writes ``--out`` (JSON).

Batches: ``--text fixed`` rows of ``--text-len`` text tokens, or ``--text variable`` (lognormal lengths, median
``--text-len``, ``--sigma``), right-padded; a ``--text-only-ratio`` share of the rows carry no image. Text-only
rows train only through a guard (``--guards replay,kl``: next-token loss on them, KL to the base with its
reference pass); without one they cost a forward pass and no loss. ``--pack`` and ``--compile`` are the GPU
preset's packed rows and compiled decoder layers (``trainer/gpu_bf16.yaml``).

    python benchmarks/distributed_throughput.py --devices 1 --strategy auto
    python benchmarks/distributed_throughput.py --devices 2 --strategy ddp
    python benchmarks/distributed_throughput.py --devices 2 --strategy fsdp
    # issue 19's row: Llama-2-7B shapes, the GPU preset, variable lengths, 20% text-only rows
    python benchmarks/distributed_throughput.py --shapes llama2-7b --devices 2 --strategy ddp --batch 8 \
        --text variable --text-len 256 --text-only-ratio 0.2 --guards replay,kl --pack --compile \
        --gradient-checkpointing
    python benchmarks/distributed_throughput.py --accelerator cpu --devices 2 --strategy ddp --shapes tiny \
        --text variable --text-only-ratio 0.25 --steps 3 --warmup 1      # a smoke run on CPU (gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput beside this file, also under -m
from train_throughput import LLMS, VISIONS, draw_batch, write_llm_config  # noqa: E402  (the same presets)

from mmpeft.adapters import AdapterSpec  # noqa: E402
from mmpeft.guards import KLToBase, Replay  # noqa: E402
from mmpeft.module import LearningRates, VLMModule  # noqa: E402
from mmpeft.projectors import MLPProjector  # noqa: E402
from mmpeft.towers import LLMTower, TimmVisionTower  # noqa: E402
from mmpeft.vlm import VisionLanguageModel  # noqa: E402


class SyntheticBatches(IterableDataset):
    """Endless batches of ``train_throughput.draw_batch`` (mixed image and text-only rows, fixed or lognormal text
    lengths), different on every rank and loader worker."""

    def __init__(self, batch: int, text_len: int, num_image_tokens: int, image_token_id: int, vocab_low: int,
                 vocab_high: int, image_size: tuple[int, int], seed: int, lengths: str = "fixed",
                 sigma: float = 1.0, text_only_ratio: float = 0.0):
        self.batch, self.text_len, self.m = batch, text_len, num_image_tokens
        self.image_token_id, self.low, self.high = image_token_id, vocab_low, vocab_high
        self.image_size, self.seed = image_size, seed
        self.lengths, self.sigma, self.text_only_ratio = lengths, sigma, text_only_ratio

    def __iter__(self):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        worker = torch.utils.data.get_worker_info()  # each loader worker its own stream, or batches repeat
        g = torch.Generator().manual_seed(self.seed + 1000 * rank + (worker.id if worker else 0))
        while True:
            yield draw_batch(g, self.batch, self.m, self.image_size, self.lengths, self.text_len, self.sigma,
                             self.low, self.high, self.image_token_id, self.text_only_ratio)


class StepTimer(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.times, self.tokens = warmup, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self.start)
            # the ranks' batches differ in length: the global batch's real tokens are their sum
            tokens = trainer.strategy.reduce(batch["attention_mask"].sum().float(), reduce_op="sum")
            self.tokens.append(int(tokens))


def wait_for_config(directory: Path, shape: dict, timeout_s: float = 600.0) -> None:
    """Until the first process has written ``directory/config.json`` with this shape's hidden size."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads((directory / "config.json").read_text()).get("hidden_size") == shape["hidden"]:
                return
        except (OSError, ValueError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{directory / 'config.json'} was not written within {timeout_s:.0f} s by the first process")


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", default="gpu", help="gpu, or cpu for a smoke run at tiny shapes")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    p.add_argument("--shapes", default=None, choices=list(LLMS),
                   help="a preset of train_throughput.py (LLM and vision shapes); default: the options below")
    p.add_argument("--vision", default="vit_base_patch16_clip_224")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=16)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=32, help="rows per device and step")
    p.add_argument("--text", default="fixed", choices=["fixed", "variable"])
    p.add_argument("--text-len", type=int, default=512, help="fixed length, or the median of variable lengths")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma of variable text lengths")
    p.add_argument("--text-only-ratio", type=float, default=0.0, help="share of rows without an image")
    p.add_argument("--pack", action="store_true", help="padding-free packed rows (model.vlm.pack_sequences)")
    p.add_argument("--compile", action="store_true", help="torch.compile each LLM decoder layer")
    p.add_argument("--lora-r", type=int, default=128)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--guards", default="", help="comma list of replay, kl: guards that train on the text-only rows")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--workdir", default="/tmp/mmpeft_bench")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not 0.0 <= args.text_only_ratio < 1.0:
        p.error(f"--text-only-ratio must be in [0, 1), got {args.text_only_ratio}")
    shape_options = ("vision", "image_size", "hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")
    if args.shapes and (given := [o for o in shape_options if getattr(args, o) != p.get_default(o)]):
        p.error(f"--shapes {args.shapes} sets the shapes; drop --{', --'.join(o.replace('_', '-') for o in given)}")
    guard_names = [g for g in args.guards.split(",") if g]
    if unknown := sorted(set(guard_names) - {"replay", "kl"}):
        p.error(f"--guards: unknown {unknown}; use replay, kl")
    if guard_names and not args.text_only_ratio:
        p.error("--guards train on text-only rows: give --text-only-ratio > 0")

    if args.shapes:
        shape = LLMS[args.shapes]
        vis = VISIONS[shape["vision"]]
        vision_name, image_size = vis["timm"], vis["image"]
        vision_kwargs = {} if vis["timm"] != "vit_tiny_patch16_224" else {
            "model_kwargs": {"patch_size": vis["patch"], "embed_dim": vis["width"], "depth": vis["depth"],
                             "num_heads": vis["heads"]}}
    else:
        shape = dict(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                     intermediate=args.intermediate, vocab=args.vocab, rope_theta=10000.0)
        vision_name, image_size, vision_kwargs = args.vision, args.image_size, {}
    name = args.shapes or f"{args.hidden}x{args.layers}"
    llm_dir = Path(args.workdir) / f"llm_{name}"
    # Lightning's DDP launcher re-runs this script in each child after rank 0 reached fit: only the first process
    # writes (concurrent writers would delete each other's temporary directories); under torchrun, wait for it
    if os.environ.get("LOCAL_RANK", "0") == "0":
        write_llm_config(llm_dir, shape)
    else:
        wait_for_config(llm_dir, shape)
    torch.manual_seed(0)
    # FSDP flattens each decoder layer's weights into one tensor of one dtype: frozen base and fp32 adapters must
    # agree there, so FSDP keeps fp32 weights (sharded) and computes in bf16 under autocast
    dtype = "bfloat16" if args.accelerator == "gpu" and args.strategy != "fsdp" else "float32"
    # random weights (every rank seeds 0, so the ranks build the same), no files; on the rank's GPU: a 7B model
    # initialised on the CPU in every rank would take minutes
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.accelerator == "gpu" else "cpu"
    with torch.device(device):
        vision = TimmVisionTower(vision_name, feature_layer=-2, dtype=dtype, image_size=image_size, **vision_kwargs)
        llm = LLMTower(str(llm_dir), dtype=dtype, random_weights=True)
        vlm = VisionLanguageModel(vision, llm, projector=MLPProjector, pack_sequences=args.pack,
                                  llm_adapter=AdapterSpec("lora", r=args.lora_r, alpha=2 * args.lora_r,
                                                          dropout=args.lora_dropout))
    guards = [{"replay": Replay, "kl": KLToBase}[g]() for g in guard_names]
    module = VLMModule(vlm, lr=LearningRates(projector=1e-4, llm=1e-4), guards=guards,
                       gradient_checkpointing=args.gradient_checkpointing, compile_llm_layers=args.compile)
    llm_params = sum(p.numel() for p in llm.parameters())  # before FSDP shards them
    trainable = sum(r.trainable for r in vlm.trainability())
    data = SyntheticBatches(args.batch, args.text_len, vlm.num_image_tokens, llm.image_token_id,
                            llm.image_token_id + 1, shape["vocab"], vision.image_size, seed=0, lengths=args.text,
                            sigma=args.sigma, text_only_ratio=args.text_only_ratio)
    timer = StepTimer(args.warmup)
    strategy = args.strategy
    if strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        strategy = FSDPStrategy(auto_wrap_policy={LlamaDecoderLayer}, use_orig_params=True,
                                sharding_strategy="FULL_SHARD")
    cuda = args.accelerator == "gpu"
    trainer = L.Trainer(accelerator=args.accelerator, devices=args.devices, strategy=strategy,
                        precision="bf16-mixed" if cuda else "32-true",
                        max_steps=args.warmup + args.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        use_distributed_sampler=False, default_root_dir=args.workdir)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=None, num_workers=2))
    peak = torch.tensor(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
                        device="cuda" if cuda else "cpu")
    if trainer.world_size > 1:
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    if trainer.is_global_zero:
        step = statistics.median(timer.times)
        tokens_per_s = statistics.median(n / t for n, t in zip(timer.tokens, timer.times))  # as train_throughput
        result = {"strategy": args.strategy, "devices": args.devices, "batch_per_device": args.batch,
                  "shapes": name, "text": args.text, "text_len": args.text_len, "sigma": args.sigma,
                  "text_only_ratio": args.text_only_ratio, "pack": args.pack, "compile": args.compile,
                  "gradient_checkpointing": args.gradient_checkpointing, "image_tokens": vlm.num_image_tokens,
                  "guards": guard_names, "lora_dropout": args.lora_dropout, "step_s": step,
                  "tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / args.devices,
                  "peak_gib": float(peak), "llm_params": llm_params, "trainable": trainable}
        print("| strategy | GPUs | rows/GPU | tokens/s | tokens/s/GPU | step s | peak GiB |")
        print(f"| {args.strategy} | {args.devices} | {args.batch} | {result['tokens_per_s']:.0f} | "
              f"{result['tokens_per_s_per_gpu']:.0f} | {step:.3f} | {result['peak_gib']:.1f} |")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
