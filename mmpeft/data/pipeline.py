"""Streaming shards into rows: shard selection per rank and worker, decode + transform + render, skip counting.

A *row* is one rendered sample (what ``Collator`` takes). ``ShardRows`` yields the rows of a list of shards for
one (epoch, rank, worker): shards are split across ranks, then across DataLoader workers, so no sample is read
twice in an epoch (or drawn with replacement in ``resampled`` mode), then shuffled within a bounded buffer.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from webdataset.tariterators import tarfile_samples

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.images import decode_image
from mmpeft.data.schema import SKIP_REASONS, SampleError, validate_record

log = logging.getLogger(__name__)


class SampleProcessor:
    """A raw webdataset sample (``__key__``, ``__url__``, ``json`` bytes, image bytes) -> a row.

    Row: ``input_ids``/``labels`` (1-D long), ``pixel_values`` (``[n, 3, H, W]`` or None), ``id``, ``source``,
    ``eval``, ``where`` (shard:key). Raises ``SampleError`` for anything unusable.
    """

    def __init__(self, renderer: ChatRenderer, image_transform: Callable[[Any], torch.Tensor]):
        self.renderer = renderer
        self.image_transform = image_transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        if "json" not in sample:
            raise SampleError("malformed_json", "sample has no .json record", where)
        try:
            record = json.loads(sample["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SampleError("malformed_json", f"record is not valid JSON ({e})", where) from e
        validate_record(record, where)
        rendered = self.renderer.render(record, where)
        pixels = None
        if rendered.num_images:
            images = []
            for field in record["images"][: rendered.num_images]:
                if field not in sample:
                    raise SampleError("missing_image", f"image field {field!r} absent from the shard", where)
                images.append(self.image_transform(decode_image(sample[field], where)))
            pixels = torch.stack(images)
        return {
            "input_ids": torch.tensor(rendered.input_ids, dtype=torch.long),
            "labels": torch.tensor(rendered.labels, dtype=torch.long),
            "pixel_values": pixels,
            "id": record["id"],
            "source": record["source"],
            "eval": record.get("eval", {}),
            "where": where,
        }


class SkipCounts:
    """Skip counts per reason, in shared memory so DataLoader worker processes can report to the main process.

    Slot 0 is the main process, slot ``1 + worker_id`` a worker; each slot is written by one process only.
    """

    def __init__(self, max_workers: int = 64):
        self.table = torch.zeros(max_workers + 1, len(SKIP_REASONS), dtype=torch.long).share_memory_()
        self._logged: set[str] = set()

    def add(self, error: SampleError, slot: int) -> None:
        self.table[slot, SKIP_REASONS.index(error.reason)] += 1
        if error.reason not in self._logged:  # once per reason and process: the message names shard and key
            self._logged.add(error.reason)
            log.warning("skipping sample (%s): %s", error.reason, error)

    def reset(self) -> None:
        self.table.zero_()

    def totals(self) -> dict[str, int]:
        sums = self.table.sum(0).tolist()
        return {reason: n for reason, n in zip(SKIP_REASONS, sums) if n}


@dataclass
class Placement:
    """Where an iteration runs: epoch, distributed rank/world, DataLoader worker id/count."""

    epoch: int = 0
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    in_worker: bool = False

    @property
    def slot(self) -> int:
        """This process's row in ``SkipCounts``."""
        return self.worker + 1 if self.in_worker else 0


class ShardRows:
    """The rows of some shards, for one placement.

    Args:
        urls: shard paths (or URLs webdataset can open).
        processor: raw sample -> row.
        skips: shared skip counts (bad samples are counted, or raised when ``strict``).
        shuffle: shuffle shard order (per epoch) and rows within ``shuffle_buffer``.
        resampled: draw shards with replacement forever (the caller bounds the epoch).
        strict: raise the first ``SampleError`` instead of counting it.
    """

    def __init__(self, urls: list[str], processor: SampleProcessor, skips: SkipCounts, *, shuffle: bool = True,
                 shuffle_buffer: int = 1000, resampled: bool = False, seed: int = 0, strict: bool = False):
        if not urls:
            raise ValueError("no shards given")
        self.urls = list(urls)
        self.processor = processor
        self.skips = skips
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.seed = seed
        self.strict = strict

    def shards_for(self, place: Placement) -> Iterator[str]:
        """This placement's shards: a disjoint slice per (rank, worker), or endless draws when resampled."""
        if self.resampled:
            rng = random.Random(f"{self.seed}-shards-{place.epoch}-{place.rank}-{place.worker}")
            while True:
                yield rng.choice(self.urls)
        readers = place.world_size * place.num_workers
        if len(self.urls) < readers:
            raise ValueError(
                f"{len(self.urls)} shard(s) cannot feed {place.world_size} rank(s) x {place.num_workers} worker(s) "
                f"without repeats (e.g. {self.urls[0]}): write at least {readers} shards (smaller "
                "--samples-per-shard), use fewer workers, or read them resampled"
            )
        order = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}-shards-{place.epoch}").shuffle(order)  # same order on every rank
        yield from order[place.rank :: place.world_size][place.worker :: place.num_workers]

    def __call__(self, place: Placement) -> Iterator[dict[str, Any]]:
        rows = self._process(place)
        if not self.shuffle or self.shuffle_buffer <= 1:
            return rows
        return _buffer_shuffle(rows, self.shuffle_buffer,
                               random.Random(f"{self.seed}-rows-{place.epoch}-{place.rank}-{place.worker}"))

    def _process(self, place: Placement) -> Iterator[dict[str, Any]]:
        def on_tar_error(exn: Exception) -> bool:
            error = SampleError("corrupt_shard", f"unreadable tar data: {exn}")
            if self.strict:
                raise error from exn
            self.skips.add(error, place.slot)
            return True  # skip the rest of that shard, continue with the next

        source = ({"url": url} for url in self.shards_for(place))
        for sample in tarfile_samples(source, handler=on_tar_error):
            try:
                yield self.processor(sample)
            except SampleError as error:
                if self.strict:
                    raise
                self.skips.add(error, place.slot)


def _buffer_shuffle(rows: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Uniform shuffle within a sliding buffer of ``size`` rows (bounded memory)."""
    buffer: list[Any] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = row
    rng.shuffle(buffer)
    yield from buffer
