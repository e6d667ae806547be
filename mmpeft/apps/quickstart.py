"""End-to-end smoke run on tiny random towers, pure PyTorch: train, generate, save, reload, export.

What ``make demo`` runs until the full demo lands. It builds tiny towers in ``workdir`` (offline), teaches the
VLM to name the colour of a solid image (projector + LoRA in both towers) in the chat format it saves with the model
(``mmpeft.data.input_format``), and checks that the saved checkpoint and the merged export, prompted in the format
saved in them, reproduce the trained model's greedy answers.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmpeft.adapters import AdapterSpec
from mmpeft.apps.tiny import save_tiny_llm, save_tiny_open_clip
from mmpeft.checkpoint import export, load_pretrained, save_trainable
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.input_format import default_input_format, renderer_for
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.vision import OpenClipVisionTower
from mmpeft.trainability import format_trainability
from mmpeft.types import IGNORE_INDEX
from mmpeft.vlm import VisionLanguageModel

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.9, 0.9, 0.1)}
QUESTION = {"role": "user", "content": "<image>\nWhat color is the picture?"}


def colour_images(vlm: VisionLanguageModel, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """n solid-colour images ``[n, 3, H, W]`` (with pixel noise) and their colour names."""
    names = list(COLOURS)
    picks = [names[i] for i in torch.randint(len(names), (n,), generator=generator).tolist()]
    size = vlm.vision.image_size
    pixels = torch.stack([
        torch.tensor(COLOURS[c]).view(3, 1, 1).expand(3, *size) + 0.1 * torch.randn(3, *size, generator=generator)
        for c in picks
    ])
    return pixels, picks


def colour_batch(vlm: VisionLanguageModel, renderer: ChatRenderer, n: int,
                 generator: torch.Generator) -> tuple[dict, list[str]]:
    """A training batch of n question/answer conversations rendered by ``renderer`` (the format saved with the
    model), right-padded; only the answer and its end-of-turn tokens are supervised."""
    pixels, picks = colour_images(vlm, n, generator)
    rows = [renderer.render({"conversations": [QUESTION, {"role": "assistant", "content": c}]}) for c in picks]
    length = max(len(r.input_ids) for r in rows)
    pad = vlm.llm.tokenizer.pad_token_id
    batch = {"input_ids": torch.tensor([r.input_ids + [pad] * (length - len(r.input_ids)) for r in rows]),
             "labels": torch.tensor([r.labels + [IGNORE_INDEX] * (length - len(r.labels)) for r in rows]),
             "attention_mask": torch.tensor([[1] * len(r.input_ids) + [0] * (length - len(r.input_ids))
                                             for r in rows]),
             "pixel_values": pixels}
    return batch, picks


def accuracy(vlm: VisionLanguageModel, generator: torch.Generator, n: int = 32) -> tuple[float, torch.Tensor]:
    """Greedy colour-naming accuracy, prompting with the model's own format (``renderer_for``: for a reloaded
    checkpoint or export, the format saved in it)."""
    pixels, truth = colour_images(vlm, n, generator)
    prompt = renderer_for(vlm).render_prompt([QUESTION])
    ids = vlm.generate_ids([prompt] * n, pixels, max_new_tokens=4)
    answers = vlm.llm.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return sum(a.strip() == t for a, t in zip(answers, truth)) / n, ids


def run(workdir: str | Path = "runs/quickstart", steps: int = 150, seed: int = 0) -> dict[str, float]:
    """Train and check; returns the measured figures (accuracy before/after, seconds)."""
    workdir = Path(workdir)
    torch.manual_seed(seed)
    start = time.perf_counter()
    llm_dir = workdir / "towers" / "llm"
    if not (llm_dir / "config.json").exists():
        save_tiny_llm(llm_dir, seed=seed)
    clip_name = save_tiny_open_clip(workdir / "towers" / "open_clip", seed=seed)
    vlm = VisionLanguageModel(
        OpenClipVisionTower(clip_name, feature_layer=-2), LLMTower(str(llm_dir)),
        vision_adapter=AdapterSpec("lora", r=4, alpha=8), llm_adapter=AdapterSpec("lora", r=8, alpha=16),
    )
    # Train in the format saved with the checkpoint and export (ChatRenderer's defaults for this tokenizer: its chat
    # template), so `mmpeft chat`, `mmpeft eval` and reloaded models prompt exactly as it was trained.
    vlm.input_format = default_input_format(vlm)
    renderer = renderer_for(vlm)
    print(format_trainability(vlm.trainability()))
    before, _ = accuracy(vlm, torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=3e-3)
    data = torch.Generator().manual_seed(seed)
    vlm.train()
    bar = tqdm(range(steps), desc="train (tiny towers)")
    for _ in bar:
        batch, _ = colour_batch(vlm, renderer, 16, data)
        loss = vlm(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    after, answers = accuracy(vlm, torch.Generator().manual_seed(1))
    save_trainable(vlm, workdir / "checkpoint")
    export(vlm, workdir / "export")
    for name in ("checkpoint", "export"):
        _, reloaded = accuracy(load_pretrained(workdir / name), torch.Generator().manual_seed(1))
        if not torch.equal(reloaded, answers):
            raise RuntimeError(f"{name} does not reproduce the trained model's greedy answers")
    figures = {"accuracy_before": before, "accuracy_after": after, "chance": 1 / len(COLOURS),
               "seconds": time.perf_counter() - start}
    print(f"colour-naming accuracy: {before:.0%} before -> {after:.0%} after {steps} steps "
          f"(chance {figures['chance']:.0%}); checkpoint and export reproduce the answers; "
          f"{figures['seconds']:.0f} s. Files in {workdir}/")
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    """``mmpeft quickstart [--workdir DIR] [--steps N]``."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft quickstart", description=__doc__)
    parser.add_argument("--workdir", default="runs/quickstart", help="where towers, checkpoint and export go")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps")
    args = parser.parse_args(argv)
    return run(args.workdir, steps=args.steps)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
