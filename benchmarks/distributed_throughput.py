#!/usr/bin/env python
"""Training throughput of mmpeft on 1..N GPUs (single device, DDP, FSDP) at a given model shape.

Builds the towers with random weights (no downloads): a timm vision tower and a Llama-shaped LLM written to a
local directory (bf16), LoRA in the LLM (and optionally the vision tower), an MLP projector, then trains
``--steps`` steps of synthetic batches (one image + ``--text-len`` text tokens per row) through ``VLMModule`` with
Lightning and reports, for the global batch: real tokens/s (median over steps after warm-up), tokens/s per GPU,
and peak GPU memory per device. Rank 0 prints a table row and writes ``--out`` (JSON).

    python benchmarks/distributed_throughput.py --devices 1 --strategy auto
    python benchmarks/distributed_throughput.py --devices 2 --strategy ddp
    python benchmarks/distributed_throughput.py --devices 2 --strategy fsdp
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, IterableDataset

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.tiny import save_tiny_llm
from mmpeft.module import LearningRates, VLMModule
from mmpeft.projectors import MLPProjector
from mmpeft.towers import LLMTower, TimmVisionTower
from mmpeft.types import IGNORE_INDEX
from mmpeft.vlm import VisionLanguageModel


def write_llm(directory: Path, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
              vocab: int) -> Path:
    """A random Llama of the given shape + a small tokenizer (its vocabulary fits inside ``vocab``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (directory / "config.json").exists():
        return directory
    save_tiny_llm(directory)  # tokenizer (and a throwaway tiny model, overwritten below)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype="bfloat16")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    return directory


class SyntheticBatches(IterableDataset):
    """Endless batches: per row one image (``num_image_tokens`` placeholders) + ``text_len`` supervised tokens."""

    def __init__(self, batch: int, text_len: int, num_image_tokens: int, image_token_id: int, vocab_low: int,
                 vocab_high: int, image_size: tuple[int, int], seed: int):
        self.batch, self.text_len, self.m = batch, text_len, num_image_tokens
        self.image_token_id, self.low, self.high = image_token_id, vocab_low, vocab_high
        self.image_size, self.seed = image_size, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + (torch.distributed.get_rank()
                                                       if torch.distributed.is_initialized() else 0))
        while True:
            text = torch.randint(self.low, self.high, (self.batch, self.text_len), generator=g)
            ids = torch.cat([torch.full((self.batch, self.m), self.image_token_id), text], dim=1)
            labels = ids.clone()
            labels[:, : self.m] = IGNORE_INDEX
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                   "pixel_values": torch.randn(self.batch, 3, *self.image_size, generator=g),
                   "has_image": torch.ones(self.batch, dtype=torch.bool),
                   "num_images": torch.ones(self.batch, dtype=torch.long)}


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
            self.tokens.append(int(batch["attention_mask"].sum()) * trainer.world_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", default="gpu", help="gpu, or cpu for a smoke run at tiny shapes")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    p.add_argument("--vision", default="vit_base_patch16_clip_224")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=16)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=32, help="rows per device and step")
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--workdir", default="/tmp/mmpeft_bench")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    llm_dir = write_llm(Path(args.workdir) / f"llm_{args.hidden}x{args.layers}", args.hidden, args.layers, args.heads,
                        args.kv_heads, args.intermediate, args.vocab)
    torch.manual_seed(0)
    # FSDP flattens each decoder layer's weights into one tensor of one dtype: frozen base and fp32 adapters must
    # agree there, so FSDP keeps fp32 weights (sharded) and computes in bf16 under autocast
    dtype = "bfloat16" if args.accelerator == "gpu" and args.strategy != "fsdp" else "float32"
    vision = TimmVisionTower(args.vision, feature_layer=-2, dtype=dtype, image_size=args.image_size)
    llm = LLMTower(str(llm_dir), dtype=dtype)
    vlm = VisionLanguageModel(vision, llm, projector=MLPProjector,
                              llm_adapter=AdapterSpec("lora", r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05))
    module = VLMModule(vlm, lr=LearningRates(projector=1e-4, llm=1e-4),
                       gradient_checkpointing=args.gradient_checkpointing)
    data = SyntheticBatches(args.batch, args.text_len, vlm.num_image_tokens, llm.image_token_id, 10,
                            min(args.vocab, 30000), vision.image_size, seed=0)
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
        tokens = statistics.median(timer.tokens)
        result = {"strategy": args.strategy, "devices": args.devices, "batch_per_device": args.batch,
                  "text_len": args.text_len, "image_tokens": vlm.num_image_tokens, "step_s": step,
                  "tokens_per_s": tokens / step, "tokens_per_s_per_gpu": tokens / step / args.devices,
                  "peak_gib": float(peak), "llm_params": sum(p.numel() for p in llm.parameters()),
                  "trainable": sum(r.trainable for r in vlm.trainability())}
        print("| strategy | GPUs | rows/GPU | tokens/s | tokens/s/GPU | step s | peak GiB |")
        print(f"| {args.strategy} | {args.devices} | {args.batch} | {result['tokens_per_s']:.0f} | "
              f"{result['tokens_per_s_per_gpu']:.0f} | {step:.3f} | {result['peak_gib']:.1f} |")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
