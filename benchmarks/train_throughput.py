#!/usr/bin/env python
"""Training throughput of mmpeft against the transformers LLaVA + peft peer, on identical batches, one process.

The peer is what researchers would otherwise run: ``LlavaForConditionalGeneration`` (CLIP vision tower, Llama
LLM) + peft LoRA on every LLM linear layer + a trainable MLP projector, bf16 weights, bf16 autocast, AdamW,
padded batches, the full-sequence LM head and loss of ``model(labels=...)``. mmpeft runs the same shapes through
its own classes (``TimmVisionTower``, ``LLMTower(random_weights=True)``, ``MLPProjector``, LoRA via
``AdapterSpec``) and trains with ``VLMModule`` under a Lightning ``Trainer`` (precision ``bf16-mixed``), with the
speed options under test (``--pack``, ``--compile``, ``--mmpeft-checkpointing``). All weights are random; nothing
is downloaded.

Peer variants (``--systems``), each the peer at its best for one purpose: ``peer`` (as above), ``peer+compile``
(``torch.compile`` on each Llama decoder layer, one line for a transformers user), ``peer+liger`` (liger-kernel's
fused RMSNorm / SwiGLU / RoPE / linear cross-entropy, ``apply_liger_kernel_to_llava``), ``peer+compile+liger``, and
``peer-qlora`` (QLoRA as its users run it: the random peer saved once, reloaded with transformers'
``BitsAndBytesConfig(load_in_4bit, nf4, double quantisation, bf16 compute)`` on the LLM (vision tower, projector
and LM head skipped, as LLaVA's own 4-bit training skips its projector and loads CLIP apart),
``prepare_model_for_kbit_training``, peft LoRA). mmpeft rows: ``mmpeft`` or ``mmpeft:<quantize>`` (the LLM tower's
``quantize``: ``fp8``, ``nf4``, ``int8``; ``--quantize-vision`` sets the vision tower's too). Ratios are against the
fastest peer variant of the run; memory also against ``peer-qlora`` and the bf16 ``mmpeft`` row when present.

Each sample is one image (576 tokens at 336 px / patch 14) + text: ``fixed`` gives every row ``--text-len``
tokens; ``variable`` draws lengths from a lognormal (median ``--text-len``, sigma ``--sigma``), clipped to
[16, 1536], and pads to the batch's longest, as HF collators do. Real tokens (image + text, not padding) count.

Printed per system: real tokens/s (median step after warm-up, step = one optimizer step measured end to end),
useful TFLOP/s, MFU against the bf16 matmul rate measured in the same run, peak GPU memory; then the
mmpeft / peer ratios. Useful FLOPs per step = 4 x N_llm per real token (N_llm: LLM parameters without the input
embedding; forward + activation gradients of a frozen base) + 6 x layers x hidden x L^2 per row of L real tokens
(causal attention, forward + backward) + 2 x N_vision per image token.

    python benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed
    python benchmarks/train_throughput.py --shapes llama2-7b --batch 16 --text variable --checkpointing \\
        --pack --mmpeft-checkpointing 1.0
    python benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
        --systems peer,peer+compile,mmpeft,mmpeft:fp8
    python benchmarks/train_throughput.py --shapes llama2-7b --batch 16 --text variable --checkpointing --pack \
        --compile --systems peer+compile,peer-qlora,mmpeft,mmpeft:nf4
    python benchmarks/train_throughput.py --shapes llama2-7b --batch 4 --text variable --checkpointing --pack \
        --systems mmpeft:nf4 --memory-cap-gib 24                            # the consumer-GPU case
    python benchmarks/train_throughput.py --device cpu --shapes tiny --steps 3 --warmup 1     # development

Peak memory is the training peak: it is reset once the model is built (and quantised), so weights count, the
bf16 copy a quantised tower is built from does not.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from profile_compare import compare, device_idle, kineto_spans, load, write_kernels  # beside this script

IMAGE_TOKEN_ID = 6  # "<image>" in the tokenizer save_tiny_llm writes (shared by both systems' batches)

LLMS = {  # Llama shapes
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000,
                      rope_theta=10000.0, vision="clip-l14-336"),
    "llama3-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
                      rope_theta=500000.0, vision="clip-l14-336"),
    "vitb-llama2048x16": dict(hidden=2048, layers=16, heads=16, kv_heads=16, intermediate=5632, vocab=32000,
                              rope_theta=10000.0, vision="vit-b16-224"),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512, rope_theta=10000.0,
                 vision="tiny"),
}
VISIONS = {  # the same ViT as timm (mmpeft) and HF CLIP (peer) configs
    "clip-l14-336": dict(timm="vit_large_patch14_clip_336", width=1024, depth=24, heads=16, mlp=4096, image=336,
                         patch=14),
    "vit-b16-224": dict(timm="vit_base_patch16_clip_224", width=768, depth=12, heads=12, mlp=3072, image=224,
                        patch=16),
    "tiny": dict(timm="vit_tiny_patch16_224", width=64, depth=2, heads=2, mlp=256, image=32, patch=8),
}


@dataclass
class Result:
    system: str
    step_s: float
    tokens_per_s: float
    tflops: float
    mfu: float
    peak_gib: float
    warmup_s: float  # the untimed first steps (compilation included)


def write_llm_config(directory: Path, shape: dict) -> Path:
    """config.json (the Llama shape) + a small tokenizer; no weights (``LLMTower(random_weights=True)``)."""
    from transformers import LlamaConfig

    from mmpeft.apps.tiny import save_tiny_llm

    save_tiny_llm(directory)
    for f in directory.glob("*.safetensors"):
        f.unlink()
    LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                num_key_value_heads=shape["kv_heads"], rope_theta=shape["rope_theta"],
                max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                eos_token_id=2).save_pretrained(directory)
    return directory


def draw_batch(g: torch.Generator, batch: int, image_tokens: int, image_size: tuple[int, int], mode: str,
               text_len: int, sigma: float, vocab_low: int, vocab_high: int, image_token_id: int = IMAGE_TOKEN_ID,
               text_only_ratio: float = 0.0) -> dict:
    """One right-padded batch (``mmpeft.types.Batch``) drawn from ``g``: per row one image (``image_tokens``
    placeholders) then its text, or, with probability ``text_only_ratio``, text only; text lengths ``text_len``
    (``mode="fixed"``) or lognormal with median ``text_len`` and ``sigma``, clamped to [16, 1536]; every text token
    supervised, token ids in [vocab_low, vocab_high)."""
    if mode == "fixed":
        lengths = [text_len] * batch
    else:
        draw = torch.randn(batch, generator=g) * sigma + math.log(text_len)
        lengths = draw.exp().round().clamp(16, 1536).long().tolist()
    # no draw without text-only rows: the image-only batches stay those of earlier measurements
    has_image = (torch.rand(batch, generator=g) >= text_only_ratio if text_only_ratio > 0
                 else torch.ones(batch, dtype=torch.bool))
    starts = [image_tokens if has_image[i] else 0 for i in range(batch)]
    width = max(m + n for m, n in zip(starts, lengths))
    ids = torch.zeros(batch, width, dtype=torch.long)  # pad id 0
    mask = torch.zeros(batch, width, dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    for i, (m, n_text) in enumerate(zip(starts, lengths)):
        text = torch.randint(vocab_low, vocab_high, (n_text,), generator=g)
        ids[i, :m] = image_token_id
        ids[i, m : m + n_text] = text
        mask[i, : m + n_text] = 1
        labels[i, m : m + n_text] = text
    n_images = int(has_image.sum())
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pixel_values": torch.randn(n_images, 3, *image_size, generator=g) if n_images else None,
            "has_image": has_image, "num_images": has_image.long()}


def make_batches(n: int, batch: int, image_tokens: int, image_size: int, mode: str, text_len: int, sigma: float,
                 vocab: int, seed: int) -> list[dict]:
    """``n`` right-padded batches, identical for both systems: one image per row, then its text (supervised)."""
    g = torch.Generator().manual_seed(seed)
    return [draw_batch(g, batch, image_tokens, (image_size, image_size), mode, text_len, sigma, IMAGE_TOKEN_ID + 1,
                       vocab) for _ in range(n)]


def useful_flops(batch: dict, n_llm: int, n_vision: int, layers: int, hidden: int, image_tokens: int) -> float:
    lengths = batch["attention_mask"].sum(1).tolist()
    llm = sum(4 * n_llm * n + 6 * layers * hidden * n * n for n in lengths)
    return llm + 2 * n_vision * (image_tokens + 1) * len(lengths)


def matmul_peak(device: str) -> float:
    """bf16 dense matmul TFLOP/s of this GPU, measured now (median of 10 8192^3 products)."""
    if device != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    times = []
    for _ in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / statistics.median(times[3:]) / 1e12


def free(device: str, reset_only: bool = False) -> None:
    if not reset_only:
        gc.collect()
    if device == "cuda":
        if not reset_only:
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


PROFILED: list[str] = []  # file stems of the profiles saved by this process, in the order of --systems
PROFILED_STEPS = 2  # recorded after the timed steps, behind one profiler warm-up step


class StepProfile:
    """``--profile DIR``: torch.profiler over two steps of each system after its timed ones; ``DIR/<system>.txt``
    gets the top operators by device time, ``DIR/<system>.kernels.json`` every kernel's (``profile_compare.py``
    compares the systems by category and kernel; ``main`` prints that comparison after the rows)."""

    def __init__(self, directory: str | None, unprofiled: int, device: str):
        """``unprofiled``: the batches before the profiler's own warm-up step (every warm-up and timed batch: the
        timed steps never run under the profiler); then 1 warm-up step and 2 recorded ones, once."""
        self.directory, self.profiler, self.device = directory, None, device
        if directory:
            from torch.profiler import ProfilerActivity, profile, schedule

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            self.sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
            self.profiler = profile(activities=activities,
                                    schedule=schedule(wait=unprofiled, warmup=1, active=PROFILED_STEPS, repeat=1))

    def __enter__(self) -> StepProfile:
        if self.profiler is not None:
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        """Stops a profiler that was not saved (the system raised): the next system starts its own."""
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            self.profiler = None

    def step(self) -> None:
        if self.profiler is not None:
            self.profiler.step()

    def save(self, system: str) -> None:
        profiler = self.profiler
        if profiler is None:
            return
        self.__exit__()
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        events = profiler.key_averages()
        # file names in letters, digits, '.', '_' and '-' only (what the GPU machine's $OUT brings back)
        stem = Path(self.directory) / system.replace(" ", "_").replace(":", "-").replace("+", "_")
        stem.with_name(stem.name + ".txt").write_text(events.table(sort_by=self.sort, row_limit=40,
                                                                   max_name_column_width=70))
        # every kernel's time, for profile_compare.py (which prints where two systems' steps differ)
        idle = device_idle(kineto_spans(profiler), PROFILED_STEPS) if self.device == "cuda" else None
        write_kernels(stem.with_name(stem.name + ".kernels.json"), events, self.device, steps=PROFILED_STEPS,
                      idle=idle)
        PROFILED.append(stem.name)


class SyncWatch:
    """``--sync-debug``: the host syncs of one step (the profiler's warm-up step, after the timed ones), counted
    by the Python line that asked for them (``torch.cuda.set_sync_debug_mode("warn")``); printed after the rows."""

    reports: dict[str, list[str]] = {}

    def __init__(self, enabled: bool, batch_index: int):
        self.enabled, self.batch_index, self.caught, self.context = enabled, batch_index, None, None

    def after_batch(self, index: int, system: str) -> None:
        """Call after batch ``index`` ended (synced): starts watching before the watched batch, stops after it."""
        if not self.enabled:
            return
        if index == self.batch_index - 1:
            self.context = warnings.catch_warnings(record=True)
            self.caught = self.context.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif index == self.batch_index and self.context is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.context.__exit__(None, None, None)
            counts: dict[str, int] = {}
            for w in self.caught:
                if "synchroniz" in str(w.message):
                    where = f"{Path(w.filename).name}:{w.lineno}"
                    counts[where] = counts.get(where, 0) + 1
            SyncWatch.reports[system] = [f"{n} x {where}" for where, n in sorted(counts.items(), key=lambda x: -x[1])]
            self.context = None


class HostTimeline:
    """Where the host is within each mmpeft step: milliseconds from one mark to the next (the first from the last
    step's synced end), medians over the timed steps, printed after the rows. A stretch before the device has work
    (fetching, planning, moving the batch) is device idle time; ``waiting for the device`` is the host ahead."""

    reports: dict[str, list[tuple[str, float]]] = {}

    def __init__(self):
        self.last: float | None = None
        self.current: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.current[name] = self.current.get(name, 0.0) + (now - self.last) * 1e3
        self.last = now

    def end_step(self) -> None:
        self.steps.append(self.current)
        self.current = {}

    def summary(self, timed: range) -> list[tuple[str, float]]:
        steps = [self.steps[i] for i in timed if i < len(self.steps)]
        names = list(dict.fromkeys(n for s in steps for n in s))
        return [(n, statistics.median(s.get(n, 0.0) for s in steps)) for n in names]


# ---------------------------------------------------------------- the peer


PEER_VARIANTS = ("peer", "peer+compile", "peer+liger", "peer+compile+liger", "peer-qlora")


def peer_config(llm_shape: dict, vis: dict):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vis["width"], intermediate_size=vis["mlp"],
                                       num_hidden_layers=vis["depth"], num_attention_heads=vis["heads"],
                                       image_size=vis["image"], patch_size=vis["patch"], projection_dim=768),
        text_config=LlamaConfig(vocab_size=llm_shape["vocab"], hidden_size=llm_shape["hidden"],
                                intermediate_size=llm_shape["intermediate"], num_hidden_layers=llm_shape["layers"],
                                num_attention_heads=llm_shape["heads"], num_key_value_heads=llm_shape["kv_heads"],
                                rope_theta=llm_shape["rope_theta"], max_position_embeddings=4096, pad_token_id=0),
        image_token_index=IMAGE_TOKEN_ID, image_seq_length=(vis["image"] // vis["patch"]) ** 2,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )


def qlora_peer(args, config, device: str):
    """The peer as QLoRA users load it: from a saved checkpoint through ``BitsAndBytesConfig`` (4-bit NF4, double
    quantisation, bf16 compute), then ``prepare_model_for_kbit_training``."""
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

    saved = Path(args.workdir) / f"peer-{args.shapes}"
    if not (saved / "config.json").is_file():  # random weights, written once (bf16), loaded like a hub model
        with torch.device(device):
            LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16).save_pretrained(saved)
        free(device)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16,
                               llm_int8_skip_modules=[r".*vision_tower", r".*multi_modal_projector", "lm_head"])
    model = LlavaForConditionalGeneration.from_pretrained(saved, quantization_config=quant, dtype=torch.bfloat16,
                                                          attn_implementation="sdpa",
                                                          device_map={"": 0 if device == "cuda" else "cpu"})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def run_peer(args, llm_shape: dict, vis: dict, batches: list[dict], device: str, variant: str = "peer"
             ) -> tuple[list[float], float, float]:
    """Train the peer ``variant`` on ``batches``: ``(seconds per step after the first, warm-up seconds, peak
    GiB)``."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    config = peer_config(llm_shape, vis)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if variant == "peer-qlora":
        model = qlora_peer(args, config, device)
    else:
        with torch.device(device):
            model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    if "liger" in variant:
        from liger_kernel.transformers import apply_liger_kernel_to_llava

        apply_liger_kernel_to_llava(model=model)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=args.lora_dropout,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    model = get_peft_model(model, lora)
    for p in model.base_model.model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    if args.checkpointing and variant != "peer-qlora":  # prepare_model_for_kbit_training switched it on
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if "compile" in variant:  # what a transformers user writes: compile each decoder layer
        for layer in model.base_model.model.model.language_model.layers:
            layer.compile()
    model.train()
    free(device, reset_only=True)  # the training peak: weights count, building them does not
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    keys = ("input_ids", "attention_mask", "labels", "pixel_values")
    ends = []
    watch = SyncWatch(args.sync_debug, args.warmup + args.steps + 1)
    with StepProfile(args.profile, args.warmup + args.steps + 1, device) as profile:
        start = time.perf_counter()
        for index, batch in enumerate(batches):
            inputs = {k: batch[k].to(device, non_blocking=True) for k in keys}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(**inputs, use_cache=False).loss  # training: no KV cache (its per-layer state recompiles)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            ends.append(time.perf_counter())
            profile.step()
            watch.after_batch(index, variant)
        peak = peak_gib(device)
        profile.save(variant)
    del model, optimizer
    return [b - a for a, b in zip(ends[:-1], ends[1:])], ends[args.warmup] - start, peak


# ---------------------------------------------------------------- mmpeft


def run_mmpeft(args, llm_dir: Path, vis: dict, batches: list[dict], device: str, quantize: str | None = None,
               cache_fp8: bool = True) -> tuple[list[float], float, float]:
    """Train mmpeft on ``batches`` with Lightning (the LLM tower's ``quantize``; the vision tower's too with
    ``--quantize-vision``; ``cache_fp8``: ``VLMModule(cache_fp8_weights=...)``): like ``run_peer``."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from mmpeft.adapters import AdapterSpec
    from mmpeft.module import LearningRates, VLMModule
    from mmpeft.projectors import MLPProjector
    from mmpeft.towers import LLMTower, TimmVisionTower
    from mmpeft.vlm import VisionLanguageModel

    class StepEnds(Callback):
        """Each step's end (synced), and the host's progress through the step (``HostTimeline``)."""

        def __init__(self):
            self.ends: list[float] = []
            self.host = HostTimeline()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.host.mark("moved to the device, hooks")

        def on_before_backward(self, trainer, module, loss):
            self.host.mark("training_step returned")

        def on_after_backward(self, trainer, module):
            self.host.mark("backward queued")

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.host.mark("to the optimizer step")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.host.mark("optimizer step queued, hooks")
            sync(device)
            self.ends.append(time.perf_counter())
            self.host.mark("waiting for the device")
            profile.step()
            watch.after_batch(len(self.ends) - 1, stem)
            self.host.end_step()

    stem = f"mmpeft-{quantize or 'bf16'}" + ("" if cache_fp8 or quantize != "fp8" else "-uncached")
    dtype = "bfloat16" if device == "cuda" else "float32"
    kwargs = {} if vis["timm"] != "vit_tiny_patch16_224" else {
        "model_kwargs": {"patch_size": vis["patch"], "embed_dim": vis["width"], "depth": vis["depth"],
                         "num_heads": vis["heads"]}}
    with torch.device(device):  # random init straight on the GPU
        vision = TimmVisionTower(vis["timm"], feature_layer=-2, dtype=dtype, image_size=vis["image"],
                                 quantize=quantize if args.quantize_vision else None, **kwargs)
        llm = LLMTower(str(llm_dir), dtype=dtype, random_weights=True, quantize=quantize)
        vlm = VisionLanguageModel(vision, llm, projector=MLPProjector, pack_sequences=args.pack,
                                  llm_adapter=AdapterSpec("lora", r=args.lora_r, alpha=2 * args.lora_r,
                                                          dropout=args.lora_dropout))
    checkpointing = args.mmpeft_checkpointing if args.mmpeft_checkpointing is not None else args.checkpointing
    module = VLMModule(vlm, lr=LearningRates(projector=1e-5, llm=1e-5), gradient_checkpointing=checkpointing,
                       compile_llm_layers=args.compile, cache_fp8_weights=cache_fp8)
    timer = StepEnds()
    watch = SyncWatch(args.sync_debug, args.warmup + args.steps + 1)
    free(device, reset_only=True)  # the training peak (see run_peer)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if device == "cuda" else "32-true", max_steps=len(batches),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], default_root_dir=args.workdir)
    before_transfer, training_step = module.on_before_batch_transfer, module.training_step

    def timed_transfer(batch, dataloader_idx):
        timer.host.mark("next batch fetched (Lightning's loop)")
        out = before_transfer(batch, dataloader_idx)
        timer.host.mark("batch planned on the host")
        return out

    def timed_step(batch, batch_idx):
        timer.host.mark("to training_step")
        return training_step(batch, batch_idx)

    module.on_before_batch_transfer, module.training_step = timed_transfer, timed_step
    with StepProfile(args.profile, args.warmup + args.steps + 1, device) as profile:
        start = time.perf_counter()
        loader = DataLoader(batches, batch_size=None)
        trainer.fit(module, train_dataloaders=loader)
        peak = peak_gib(device)
        profile.save(stem)
    HostTimeline.reports[stem] = timer.host.summary(
        range(args.warmup + 1, args.warmup + args.steps + 1))
    del trainer, module, vlm
    return [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:])], timer.ends[args.warmup] - start, peak


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--shapes", default="llama2-7b", choices=list(LLMS))
    p.add_argument("--batch", type=int, default=8, help="samples per optimizer step")
    p.add_argument("--text", default="fixed", choices=["fixed", "variable"])
    p.add_argument("--text-len", type=int, default=None, help="fixed length, or the variable median "
                   "(default 512 fixed, 256 variable)")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma of variable text lengths")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing (both systems)")
    p.add_argument("--mmpeft-checkpointing", type=float, default=None,
                   help="mmpeft only: checkpoint this fraction of LLM layers instead (0 = none)")
    p.add_argument("--pack", action="store_true", help="mmpeft: padding-free packed rows (pack_sequences)")
    p.add_argument("--compile", action="store_true", help="mmpeft: torch.compile each LLM decoder layer")
    p.add_argument("--lora-r", type=int, default=128)
    p.add_argument("--lora-dropout", type=float, default=0.05,
                   help="LoRA dropout of both systems (0: no dropout kernels or saved masks, what it costs)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (more with --compile)")
    p.add_argument("--systems", default="peer,mmpeft",
                   help=f"comma list of {', '.join(PEER_VARIANTS)}, mmpeft, mmpeft:<fp8|nf4|int8>, "
                   "mmpeft:fp8:uncached (the frozen weights cast to FP8 at every step, as before the cache)")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="profile two more steps of each system after the timed ones; DIR/<system>.txt: top "
                   "operators by device time, DIR/<system>.kernels.json: every kernel's (compared after the rows)")
    p.add_argument("--sync-debug", action="store_true",
                   help="with --profile on a GPU: count the host syncs of the step after the timed ones, by line")
    p.add_argument("--quantize-vision", action="store_true", help="mmpeft:<q> rows quantise the vision tower too")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="cap this process's GPU memory (torch.cuda.set_per_process_memory_fraction)")
    p.add_argument("--label", default=None, help="name of the mmpeft row (default from its options)")
    p.add_argument("--workdir", default="/tmp/mmpeft_train_throughput")
    p.add_argument("--out", default=None, help="append the result rows to this JSON-lines file")
    args = p.parse_args()
    if args.sync_debug and (args.device != "cuda" or not args.profile):
        p.error("--sync-debug needs --device cuda and --profile DIR (it watches the profiler's warm-up step)")
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    elif args.memory_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib / total))
    systems = args.systems.split(",")
    unknown = [s for s in systems if s not in PEER_VARIANTS and s.split(":")[0] != "mmpeft"]
    if unknown:
        p.error(f"--systems: unknown {unknown}; use {', '.join(PEER_VARIANTS)}, mmpeft, mmpeft:<quantize>")
    text_len = args.text_len or (512 if args.text == "fixed" else 256)
    shape = LLMS[args.shapes]
    vis = VISIONS[shape["vision"]]
    image_tokens = (vis["image"] // vis["patch"]) ** 2
    llm_dir = write_llm_config(Path(args.workdir) / f"llm-{args.shapes}", shape)
    # with --profile, 1 + PROFILED_STEPS more batches after the timed ones, for the profiler alone
    extra = 1 + PROFILED_STEPS if args.profile else 0
    batches = make_batches(args.warmup + args.steps + 1 + extra, args.batch, image_tokens, vis["image"], args.text,
                           text_len, args.sigma, shape["vocab"], seed=0)
    peak_tflops = matmul_peak(args.device)
    n_llm = (shape["layers"] * (2 * shape["hidden"] ** 2 + 2 * shape["hidden"] * shape["hidden"] // shape["heads"]
                                * shape["kv_heads"] + 3 * shape["hidden"] * shape["intermediate"])
             + shape["hidden"] * shape["vocab"])
    n_vision = vis["depth"] * (4 * vis["width"] ** 2 + 2 * vis["width"] * vis["mlp"])
    flops = [useful_flops(b, n_llm, n_vision, shape["layers"], shape["hidden"], image_tokens) for b in batches]
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    measured = batches[: args.warmup + args.steps + 1]  # not the profiler's extra batches
    padded = sum(b["attention_mask"].numel() for b in measured) / sum(tokens[: len(measured)])
    label = args.label or "mmpeft" + "".join(f" +{o}" for o, on in (("pack", args.pack), ("compile", args.compile))
                                             if on)
    results, failed = [], {}
    for system in systems:
        free(args.device)
        # Dynamo's caches are per code object, and the peer's and mmpeft's decoder layers share transformers'
        # LlamaDecoderLayer.forward: without a reset, one system's recompiles count against the next one's limit
        # (a system can silently run eager after another hit torch._dynamo's recompile_limit).
        torch._dynamo.reset()
        parts = system.split(":")  # mmpeft[:<quantize>[:uncached]]
        name = system if system in PEER_VARIANTS else " ".join([label, *parts[1:]])
        try:
            if system in PEER_VARIANTS:
                steps, warmup, peak = run_peer(args, shape, vis, batches, args.device, system)
            else:
                steps, warmup, peak = run_mmpeft(args, llm_dir, vis, batches, args.device,
                                                 parts[1] if len(parts) > 1 else None,
                                                 cache_fp8="uncached" not in parts[2:])
        except Exception as e:  # a variant that cannot run here (no liger kernels, out of memory): say so, go on
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            print(f"{name}: not run: {failed[name]}")
            continue
        timed = range(args.warmup, args.warmup + args.steps)  # step i ends batch i+1 (profiled ones follow)
        step_s = statistics.median(steps[i] for i in timed)
        tok_s = statistics.median(tokens[i + 1] / steps[i] for i in timed)
        tflops = statistics.median(flops[i + 1] / steps[i] for i in timed) / 1e12
        results.append(Result(name, step_s, tok_s, tflops, tflops / peak_tflops, peak, warmup))
        # each row as soon as it is measured: a run cut short by a time limit keeps what it measured
        print(f"row {name}: {step_s:.3f} s/step, {tok_s:,.0f} real tokens/s, {tflops / peak_tflops:.1%} MFU, "
              f"peak {peak:.1f} GiB, warm-up {warmup:.0f} s", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"shapes": args.shapes, "batch": args.batch, "text": args.text,
                                    "text_len": text_len, "checkpointing": args.checkpointing,
                                    "mmpeft_checkpointing": args.mmpeft_checkpointing, "pack": args.pack,
                                    "compile": args.compile, "lora_r": args.lora_r,
                                    "lora_dropout": args.lora_dropout, "padded_over_real": padded,
                                    "device": args.device,
                                    "quantize_vision": args.quantize_vision, "memory_cap_gib": args.memory_cap_gib,
                                    "torch": torch.__version__, **results[-1].__dict__}) + "\n")
    print(f"\n{args.shapes}, batch {args.batch}, text {args.text} (median {text_len}), checkpointing "
          f"{args.checkpointing}; {args.device}, matmul peak {peak_tflops:.0f} TFLOP/s; padded/real tokens "
          f"{padded:.2f}")
    print("| system | step s | real tokens/s | useful TFLOP/s | MFU | peak GiB | warm-up s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.system} | {r.step_s:.3f} | {r.tokens_per_s:,.0f} | {r.tflops:.0f} | {r.mfu:.1%} | "
              f"{r.peak_gib:.1f} | {r.warmup_s:.0f} |")
    for name, why in failed.items():
        print(f"| {name} | not run: {why} | | | | | |")
    peers = [r for r in results if r.system in PEER_VARIANTS]
    fastest = max(peers, key=lambda r: r.tokens_per_s, default=None)
    by_name = {r.system: r for r in results}
    memory_refs = [by_name[n] for n in ("peer-qlora", label) if n in by_name]
    for r in results:
        if fastest is not None and r.system not in PEER_VARIANTS:
            memory = ", ".join(f"{r.peak_gib / m.peak_gib:.2f}x {m.system}" for m in memory_refs if m is not r)
            print(f"ratio {r.system} / fastest peer ({fastest.system}): tokens/s "
                  f"{r.tokens_per_s / fastest.tokens_per_s:.2f}x, peak memory {r.peak_gib / fastest.peak_gib:.2f}x"
                  + (f"; peak memory vs {memory}" if memory else ""))
    for system, marks in HostTimeline.reports.items():
        print(f"host timeline of a {system} step (ms, median): "
              + "; ".join(f"{name} {ms:.1f}" for name, ms in marks))
    for system, lines in SyncWatch.reports.items():
        print(f"host syncs in one step of {system}: {len(lines) and sum(int(x.split(' x ')[0]) for x in lines)}")
        for line in lines[:20]:
            print(f"  {line}")
    if args.profile and len(results) > 1:
        print("\nwhere the step time goes (profile_compare.py, two profiled steps):")
        print(compare(load(Path(args.profile), PROFILED)))


if __name__ == "__main__":
    main()
