"""Streaming shards into rows: shard selection per rank and worker, decode + transform + render, skip counting.

A *row* is one rendered sample (what ``Collator`` takes). ``ShardRows`` yields the rows of a list of shards for
one (epoch, rank, worker): shards are split across ranks, then across DataLoader workers, so no sample is read
twice in an epoch (or drawn with replacement in ``resampled`` mode), then shuffled within a bounded buffer.

Every shard read to its end is checked against its manifest count (``mmpeft.data.integrity``): samples it gave
(each a row or a skip) versus samples it should hold; the difference is lost, by shard and reason, in
``SkipCounts``. Reads cut short by the caller (``rows_per_epoch``, a finished mix) are not compared.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from mmpeft.data.chat import ChatRenderer
from mmpeft.data.images import decode_image
from mmpeft.data.integrity import LOST_REASONS, ShardDamaged, ShardOutcome, ShardReader, manifest_counts
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
        return self.process(record, sample, where)

    def process(self, record: Any, files: dict[str, Any], where: str) -> dict[str, Any]:
        """A parsed record and its image bytes by field (``record["images"]`` names them) -> a row. Every source
        format ends here, so shards and direct reads of the same record give the same row."""
        validate_record(record, where)
        rendered = self.renderer.render(record, where)
        pixels = None
        if rendered.num_images:
            images = []
            for field in record["images"][: rendered.num_images]:
                if field not in files:
                    raise SampleError("missing_image", f"image field {field!r} absent from the shard", where)
                images.append(self.image_transform(decode_image(files[field], where)))
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


class NoUsableRows(ValueError):
    """A stream read its shards and got no row it could use (every sample skipped, or every shard unreadable)."""


class SkipCounts:
    """Skip counts per reason, and per-shard read counts, in shared memory so DataLoader worker processes can report
    to the main process.

    Slot 0 is the main process, slot ``1 + worker_id`` a worker; each slot is written by one process only. Shards
    are registered by their readers (``register``) before any worker starts; per (slot, shard) it keeps complete
    reads, the samples they gave and the rows given (``reads``), rows lost by ``LOST_REASONS`` (``lost``), and
    reads that stopped early with no manifest count to say how many rows that cost (``damaged``).
    """

    READS, SAMPLES, ROWS = range(3)

    def __init__(self, max_workers: int = 64):
        self.table = torch.zeros(max_workers + 1, len(SKIP_REASONS), dtype=torch.long).share_memory_()
        self.urls: list[str] = []
        self.expected: list[int | None] = []
        self.reads = self._shard_table(0, 3)
        self.lost = self._shard_table(0, len(LOST_REASONS))
        self.damaged = self._shard_table(0, len(LOST_REASONS))
        self._logged: set[str] = set()

    def _shard_table(self, shards: int, fields: int) -> torch.Tensor:
        return torch.zeros(self.table.shape[0], shards, fields, dtype=torch.long).share_memory_()

    def register(self, urls: list[str], expected: dict[str, int | None]) -> int:
        """Add a reader's shards (with their manifest counts); returns the index of its first shard. Call before
        iterating: the tables are reallocated."""
        offset = len(self.urls)
        self.urls += urls
        self.expected += [expected.get(u) for u in urls]
        grown = []
        for old in (self.reads, self.lost, self.damaged):
            table = self._shard_table(len(self.urls), old.shape[2])
            table[:, :offset] = old
            grown.append(table)
        self.reads, self.lost, self.damaged = grown
        return offset

    def add(self, error: SampleError, slot: int) -> None:
        self.table[slot, SKIP_REASONS.index(error.reason)] += 1
        if error.reason not in self._logged:  # once per reason and process: the message names shard and key
            self._logged.add(error.reason)
            log.warning("skipping sample (%s): %s", error.reason, error)
        else:  # every further one at debug level: each names its file and line / shard and key
            log.debug("skipping sample (%s): %s", error.reason, error)

    def add_row(self, shard: int, slot: int) -> None:
        """Count a row given by shard ``shard`` (a registered index), as it is given: reads cut short count too."""
        self.reads[slot, shard, self.ROWS] += 1

    def add_read(self, outcome: ShardOutcome, shard: int, slot: int) -> None:
        """Record a complete read of shard ``shard`` (a registered index)."""
        self.reads[slot, shard, self.READS] += 1
        self.reads[slot, shard, self.SAMPLES] += outcome.samples
        if outcome.reason is None:
            return
        reason = LOST_REASONS.index(outcome.reason)
        if outcome.lost is None:
            self.damaged[slot, shard, reason] += 1
        else:
            self.lost[slot, shard, reason] += outcome.lost
        if outcome.url not in self._logged:  # once per shard and process; the epoch report counts every read
            self._logged.add(outcome.url)
            log.warning("lost rows: %s", outcome.message())

    def reset(self) -> None:
        for table in (self.table, self.reads, self.lost, self.damaged):
            table.zero_()

    def totals(self) -> dict[str, int]:
        sums = self.table.sum(0).tolist()
        return {reason: n for reason, n in zip(SKIP_REASONS, sums) if n}

    def shard_reads(self, first: int = 0, count: int | None = None) -> torch.Tensor:
        """``[shards, 3]``: complete reads, samples in them, rows given, per shard (summed over slots)."""
        return self.reads.sum(0)[first : None if count is None else first + count]

    def losses(self) -> tuple[dict[str, dict[str, int]], dict[str, str], int]:
        """``(lost, damaged, unchecked)``: rows lost by shard and reason; shards without a manifest count whose
        read stopped early, by reason; complete reads of shards that have no manifest count."""
        lost_table, damaged_table = self.lost.sum(0), self.damaged.sum(0)
        reads = self.reads.sum(0)[:, self.READS]
        lost: dict[str, dict[str, int]] = {}
        damaged: dict[str, str] = {}
        for i, url in enumerate(self.urls):
            per = {r: int(n) for r, n in zip(LOST_REASONS, lost_table[i].tolist()) if n}
            if per:
                merged = lost.setdefault(url, {})  # the same file may be registered by two readers
                for r, n in per.items():
                    merged[r] = merged.get(r, 0) + n
            hit = [r for r, n in zip(LOST_REASONS, damaged_table[i].tolist()) if n]
            if hit:
                damaged[url] = hit[0]
        unchecked = sum(int(reads[i]) for i, n in enumerate(self.expected) if n is None)
        return lost, damaged, unchecked


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
        skips: shared counts: bad samples are counted (or raised when ``strict``), and every complete shard read is
            compared with its manifest count (lost rows counted, or ``ShardDamaged`` raised when ``strict``).
        shuffle: shuffle shard order (per epoch) and rows within ``shuffle_buffer``.
        resampled: draw shards with replacement forever (the caller bounds the epoch). Raises ``NoUsableRows``
            once every shard has been read through without giving a row, instead of drawing forever.
        strict: raise the first ``SampleError`` instead of counting it.
        expected: samples per shard (None: unknown); default: from the manifests beside the shards.
    """

    def __init__(self, urls: list[str], processor: SampleProcessor, skips: SkipCounts, *, shuffle: bool = True,
                 shuffle_buffer: int = 1000, resampled: bool = False, seed: int = 0, strict: bool = False,
                 expected: dict[str, int | None] | None = None):
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
        self.expected = manifest_counts(self.urls) if expected is None else dict(expected)
        self.first_shard = skips.register(self.urls, self.expected)

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
        index = {url: self.first_shard + i for i, url in enumerate(self.urls)}
        # resampled: shards read through without a row, while none has given one (None: some shard gave rows)
        fruitless: set[str] | None = set() if self.resampled else None
        for url in self.shards_for(place):
            reader = ShardReader(url)
            rows = 0
            for sample in reader:
                try:
                    row = self.processor(sample)
                except SampleError as error:
                    if self.strict:
                        raise
                    self.skips.add(error, place.slot)
                    continue
                rows += 1
                self.skips.add_row(index[url], place.slot)
                yield row
            # only reached when the shard was read to its end: a read the caller cut short is never compared
            outcome = reader.outcome(self.expected.get(url))
            if outcome.reason is not None and self.strict:
                raise ShardDamaged(f"lost rows: {outcome.message()}")
            self.skips.add_read(outcome, index[url], place.slot)
            if fruitless is not None:
                if rows:
                    fruitless = None  # this stream can give rows: draws may go on forever
                    continue
                fruitless.add(url)
                if len(fruitless) == len(index):
                    raise NoUsableRows(f"every one of the {len(index)} shard(s) was read through without a usable "
                                       f"row (e.g. {url}); skipped: {self.skips.totals() or 'none'}")


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
