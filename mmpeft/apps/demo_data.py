"""The demo's data, drawn once under the cache: the synthetic shapes benchmark, a text-only replay corpus from
CPython's ``pydoc_data`` topics (three quarters of them) and a perplexity probe on the held-out quarter."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from mmpeft.atomic import write_text_atomic
from mmpeft.data.schema import make_record
from mmpeft.data.shards import MANIFEST, PreparedSample, write_shards
from mmpeft.data.synthetic import write_benchmark

REPLAY_WORDS = 8  # words of pydoc text per replay row: about 37 tokens with the prompt (16 words: 49, max 100)


def pydoc_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """CPython's pydoc topics, sorted: every 4th for probing, the rest for replay (disjoint)."""
    from pydoc_data.topics import topics

    items = sorted(topics.items())
    return [t for i, t in enumerate(items) if i % 4 != 0], [t for i, t in enumerate(items) if i % 4 == 0]


def prepare_data(root: Path, quick: bool, seed: int, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Benchmark shards, replay shards and probe files under ``root`` (reused when present)."""
    bench = root / ("shapes-quick" if quick else "shapes-v1") / f"seed{seed}"
    if not (bench / "baselines.json").exists():
        say(f"drawing the synthetic shapes benchmark into {bench}")
        write_benchmark(str(bench), seed=seed, train_scenes=48 if quick else 2000, eval_scenes=12 if quick else 100,
                        questions_per_scene=3, eval_per_type=8 if quick else 60,
                        samples_per_shard=64 if quick else 500)
    replay_topics, probe_topics = pydoc_split()
    replay = root / f"replay-pydoc-{REPLAY_WORDS}w"
    if not (replay / MANIFEST).exists():
        say("writing the text-only replay corpus (pydoc topics)")
        rng = random.Random(seed)
        chunks = []
        for name, text in replay_topics:
            # short spans: replay rows no longer than VQA rows, so mixed batches do not pad to the text rows
            words = text.split()
            for start in range(0, max(1, len(words) - REPLAY_WORDS), REPLAY_WORDS):
                chunks.append((name, " ".join(words[start : start + REPLAY_WORDS])))
        rng.shuffle(chunks)

        def prepare(item: tuple[int, tuple[str, str]]) -> PreparedSample:
            i, (name, span) = item
            record = make_record(f"pydoc-{i}", "replay_pydoc", conversations=[
                {"role": "user", "content": f"Tell me about '{name}' in Python."},
                {"role": "assistant", "content": span}])
            return PreparedSample(key=f"{i:06d}", record=record)

        write_shards(list(enumerate(chunks[:4000])), prepare, replay, samples_per_shard=500,
                     description="replay corpus")
    probe_file = root / "pydoc_probe.jsonl"
    if not probe_file.exists():
        write_text_atomic(probe_file, "".join(json.dumps({"text": text}) + "\n" for _, text in probe_topics))
    return {"bench": bench, "replay": replay, "pydoc_probe": probe_file}

