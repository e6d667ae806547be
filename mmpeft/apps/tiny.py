"""Tiny random towers written to a local directory: the offline stand-ins for hub models.

They go through exactly the loading paths real models use (``from_pretrained(dir)``, open_clip ``local-dir:``,
timm ``checkpoint_path``), so tests, notebooks and the smoke demo exercise the real code without a network.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmpeft.atomic import atomic_path, write_text_atomic
from mmpeft.atomic_directory import atomic_directory

TINY_OPEN_CLIP = "ViT-Tiny-Test"
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS = [
    "a red circle on the left and a blue square on the right",
    "What color is the circle? red. What shape is the blue object? square.",
    "How many objects are there? two. Is there a green triangle? no.",
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is Paris. Two plus three is five.",
    "user assistant system image picture photo describe answer question",
    "large small yellow purple orange top bottom middle left right center",
    "0 1 2 3 4 5 6 7 8 9 ten eleven twelve yes no maybe",
]


def save_tiny_llm(directory: str | Path, *, vocab_size: int = 512, hidden_size: int = 64, layers: int = 2,
                  with_image_token: bool = True, seed: int = 0) -> Path:
    """A 2-layer Llama + a byte-level BPE tokenizer trained here, saved with ``save_pretrained``.

    ``with_image_token=False`` leaves ``<image>`` out of the vocabulary, so ``LLMTower`` has to add it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    if with_image_token:
        specials.append("<image>")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=specials[3:],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    with atomic_directory(directory) as tmp:  # the model and its tokenizer appear together or not at all
        LlamaForCausalLM(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return directory


def save_tiny_open_clip(directory: str | Path, *, image_size: int = 32, seed: int = 0) -> str:
    """Register a 2-layer width-64 open_clip ViT and save it as a ``local-dir:`` model; returns that name."""
    import open_clip
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
    }
    write_text_atomic(directory / f"{TINY_OPEN_CLIP}.json", json.dumps(cfg))
    open_clip.add_model_config(directory / f"{TINY_OPEN_CLIP}.json")
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_OPEN_CLIP, pretrained=None)
    write_text_atomic(directory / "open_clip_config.json", json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }))
    with atomic_path(directory / "open_clip_model.safetensors") as tmp:  # last: save_tiny_towers checks for it
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    return f"local-dir:{directory}"


TINY_TIMM_VIT_KWARGS = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}


def save_tiny_timm_vit(path: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A 2-block width-64 timm ViT (``vit_tiny_patch16_224`` resized) saved as a safetensors checkpoint."""
    return _save_timm("vit_tiny_patch16_224", path, seed, img_size=image_size, **TINY_TIMM_VIT_KWARGS)


def save_tiny_timm_cnn(path: str | Path, *, seed: int = 0) -> Path:
    """An EfficientNet-Lite0 (the demo's CNN family) with random weights, saved as a safetensors checkpoint."""
    return _save_timm("tf_efficientnet_lite0", path, seed)


def _save_timm(name: str, path: str | Path, seed: int, **kwargs) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    return path


def save_tiny_towers(directory: str | Path | None = None) -> Path:
    """All tiny towers in one directory (idempotent). The default, ``$MMPEFT_CACHE/tiny`` (``mmpeft.zoo.tiny_dir``),
    is where ``configs/model/tiny.yaml`` and ``configs/data/tiny.yaml`` look (``zoo:tiny/...``), from any directory."""
    from mmpeft.zoo import tiny_dir

    directory = tiny_dir() if directory is None else Path(directory)
    if not (directory / "llm" / "config.json").exists():
        save_tiny_llm(directory / "llm")
    if not (directory / "open_clip" / "open_clip_model.safetensors").exists():
        save_tiny_open_clip(directory / "open_clip")
    if not (directory / "timm_vit.safetensors").exists():
        save_tiny_timm_vit(directory / "timm_vit.safetensors")
    save_tiny_shards(directory / "data")
    return directory


TINY_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 230, 40)}


def save_tiny_shards(directory: str | Path, *, image_samples: int = 64, text_samples: int = 32,
                     samples_per_shard: int = 8, seed: int = 0) -> Path:
    """Tiny colour-naming shards (``train/``, ``val/``) and text-only replay shards (``text/``), real format."""
    import io
    import random

    from PIL import Image

    from mmpeft.data.schema import image_field, make_record
    from mmpeft.data.shards import PreparedSample, write_shards

    directory = Path(directory)
    rng = random.Random(seed)
    names = list(TINY_COLOURS)

    def image_sample(i: int) -> PreparedSample:
        colour = names[i % len(names)]
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), TINY_COLOURS[colour]).save(buf, format="PNG")
        record = make_record(f"colour-{i}", "tiny_colours", images=[image_field(0, "png")], conversations=[
            {"role": "user", "content": "<image>\nWhat color is the picture?"},
            {"role": "assistant", "content": colour}], eval_fields={"answers": [colour] * 10})
        return PreparedSample(key=f"{i:06d}", record=record, files={image_field(0, "png"): buf.getvalue()})

    def text_sample(i: int) -> PreparedSample:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        record = make_record(f"sum-{i}", "tiny_text", conversations=[
            {"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": str(a + b)}])
        return PreparedSample(key=f"{i:06d}", record=record)

    splits = {"train": (range(image_samples), image_sample),
              "val": (range(image_samples, image_samples + 16), image_sample),
              "text": (range(text_samples), text_sample)}
    for split, (items, prepare) in splits.items():  # each split by its own manifest (written last): resumable
        if not (directory / split / "manifest.json").exists():
            write_shards(items, prepare, directory / split, samples_per_shard=samples_per_shard)
    return directory


def main(argv: list[str] | None = None) -> Path:
    """``mmpeft tiny-towers [DIR]``: prints and returns the directory."""
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     prog="mmpeft tiny-towers", description=save_tiny_towers.__doc__)
    parser.add_argument("directory", nargs="?", default=None,
                        help="where to write them (default $MMPEFT_CACHE/tiny, ~/.cache/mmpeft/tiny unless set: where "
                             "configs/model/tiny.yaml and configs/data/tiny.yaml look, as zoo:tiny/...)")
    directory = save_tiny_towers(parser.parse_args(argv).directory)
    print(directory)
    return directory
