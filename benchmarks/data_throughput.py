#!/usr/bin/env python
"""Data pipeline throughput: samples/s for read + decode + transform + render + collate, by worker count.

Writes synthetic caption shards (JPEG photos-like noise images at --image-size, LLaVA-style conversations), then
times full epochs of ``VLLoader`` with 0..N DataLoader workers (with --text-ratio, text-only replay rows mixed in).
Prints a markdown table: median samples/s over --repeats epochs, and the ratio to the 0-worker run.

    python benchmarks/data_throughput.py --samples 2000 --workers 0 1 2 4
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from mmpeft.apps.tiny import save_tiny_llm
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator
from mmpeft.data.loader import VLLoader, VLStream
from mmpeft.data.pipeline import SampleProcessor, ShardRows, SkipCounts
from mmpeft.data.schema import image_field, make_record
from mmpeft.towers.llm import LLMTower
from mmpeft.towers.vision import TimmVisionTower


def write_shards(root: Path, samples: int, per_shard: int, image_size: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    image_urls, text_urls = [], []
    for s in range(-(-samples // per_shard)):
        url = str(root / f"img-{s:06d}.tar")
        with wds.TarWriter(url) as w:
            for i in range(min(per_shard, samples - s * per_shard)):
                # smooth random image (compresses like a photo, unlike white noise)
                small = rng.integers(0, 255, (image_size // 16, image_size // 16, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((image_size, image_size), Image.BILINEAR)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                rec = make_record(f"{s}_{i}", "bench", images=[image_field(0, "jpg")], conversations=[
                    {"role": "user", "content": "<image>\nDescribe the image in detail."},
                    {"role": "assistant", "content": "A blurry image with patches of colour " * 4}])
                w.write({"__key__": f"{s}_{i}", "json": json.dumps(rec).encode(), "img0.jpg": buf.getvalue()})
        image_urls.append(url)
    for s in range(8):
        url = str(root / f"txt-{s:06d}.tar")
        with wds.TarWriter(url) as w:
            for i in range(100):
                rec = make_record(f"t{s}_{i}", "replay", text="Some replayed English text about Python. " * 8)
                w.write({"__key__": f"t{s}_{i}", "json": json.dumps(rec).encode()})
        text_urls.append(url)
    return image_urls, text_urls


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1200, help="image samples per epoch")
    parser.add_argument("--per-shard", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=384, help="stored JPEG size (decoded, then resized)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--text-ratio", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vision", default="tf_efficientnet_lite0",
                        help="timm model whose image transform runs (e.g. vit_large_patch14_clip_336)")
    parser.add_argument("--image-tokens", type=int, default=49, help="placeholders per image in rendered rows")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image_urls, text_urls = write_shards(root, args.samples, args.per_shard, args.image_size)
        tok = LLMTower(str(save_tiny_llm(root / "llm"))).tokenizer
        # The transform of a real tower (resize + crop + normalise); random weights, never run here.
        vision = TimmVisionTower(args.vision)
        transform = vision.image_transform
        processor = SampleProcessor(ChatRenderer(tok, "<image>", num_image_tokens=args.image_tokens,
                                                 max_length=args.image_tokens + 1024), transform)
        rows = []
        base = None
        for workers in args.workers:
            times, counts = [], []
            for _ in range(args.repeats):
                skips = SkipCounts()
                stream = VLStream(ShardRows(image_urls, processor, skips), ShardRows(text_urls, processor, skips),
                                  args.text_ratio, args.batch_size, Collator(tok.pad_token_id))
                loader = VLLoader(stream, skips, num_workers=workers)
                start = time.perf_counter()
                n = sum(len(b["id"]) for b in loader)
                times.append(time.perf_counter() - start)
                counts.append(n)
            rate = statistics.median(c / t for c, t in zip(counts, times))
            base = base or rate
            rows.append((workers, statistics.median(counts), rate, rate / base))
    size = "x".join(map(str, vision.image_size))
    print(f"\n{args.samples} image samples ({args.image_size}px JPEG -> {size} tensors, {args.vision}) + text "
          "replay at "
          f"{args.text_ratio:.0%}, batch {args.batch_size}, median of {args.repeats} epochs\n")
    print("| workers | rows/epoch | samples/s | vs 0 workers |")
    print("| ---: | ---: | ---: | ---: |")
    for workers, n, rate, ratio in rows:
        print(f"| {workers} | {n:.0f} | {rate:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
