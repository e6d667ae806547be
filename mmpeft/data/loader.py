"""The training / evaluation loader: mixed shard streams -> collated batches, with per-epoch statistics.

``VLStream`` is the ``IterableDataset`` each DataLoader worker runs: it finds its placement (epoch, rank, worker),
mixes its share of the image and text-only rows, and batches them. ``VLLoader`` wraps the DataLoader, advances the
epoch, and after every pass reports what was seen: rows, the realised text-only ratio against the target, rows
per source, and skipped samples by reason.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmpeft.data.collate import Collator, batch_rows
from mmpeft.data.mixing import ReplayMixer
from mmpeft.data.pipeline import Placement, ShardRows, SkipCounts

log = logging.getLogger(__name__)


def distributed_placement() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed when initialised, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class VLStream(IterableDataset):
    """Batches of mixed rows for the current epoch and this process's placement.

    Args:
        image_rows / text_rows: shard readers (either may be None; see ``ReplayMixer``).
        text_ratio: target fraction of text-only rows.
        batch_size: rows per batch.
        collate: the collator.
        bucket_window: length bucketing window in batches (0: off).
        rows_per_epoch: cap on rows per rank and epoch (required with resampled shards).
        drop_last: drop a final partial batch.
    """

    def __init__(self, image_rows: ShardRows | None, text_rows: ShardRows | None, text_ratio: float,
                 batch_size: int, collate: Collator, *, bucket_window: int = 0, rows_per_epoch: int | None = None,
                 drop_last: bool = False, seed: int = 0):
        self.mixer = ReplayMixer(image_rows, text_rows, text_ratio, seed=seed)
        primary = image_rows if text_ratio < 1 else text_rows  # its end is the epoch's end
        if primary is not None and primary.resampled and rows_per_epoch is None:
            raise ValueError("resampled shards never end: set rows_per_epoch")
        self.batch_size = batch_size
        self.collate = collate
        self.bucket_window = bucket_window
        self.rows_per_epoch = rows_per_epoch
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        place = Placement(epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                          worker=info.id if info else 0, num_workers=info.num_workers if info else 1,
                          in_worker=info is not None)
        rows = self.mixer.rows(place)
        if self.rows_per_epoch is not None:
            share = self.rows_per_epoch // place.num_workers + (place.worker < self.rows_per_epoch % place.num_workers)
            rows = itertools.islice(rows, share)
        yield from batch_rows(rows, self.batch_size, self.collate, bucket_window=self.bucket_window,
                              seed=((self.seed * 1009 + self.epoch) * 1009 + place.rank) * 1009 + place.worker,
                              drop_last=self.drop_last)


@dataclass
class EpochStats:
    """What one pass over a ``VLLoader`` delivered."""

    epoch: int
    batches: int = 0
    rows: int = 0
    text_rows: int = 0
    tokens: int = 0
    sources: Counter = field(default_factory=Counter)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def text_ratio(self) -> float:
        return self.text_rows / max(self.rows, 1)


class VLLoader:
    """Iterable of batches; each ``iter()`` is one epoch. Lightning accepts it wherever a DataLoader goes.

    Args:
        stream: the ``VLStream``.
        skips: the shared skip counts its shard readers write.
        num_workers: DataLoader worker processes.
        name: used in the end-of-epoch report (``train``, ``val``, ...).
    """

    def __init__(self, stream: VLStream, skips: SkipCounts, num_workers: int = 0, name: str = "train",
                 pin_memory: bool = False):
        self.stream = stream
        self.skips = skips
        self.num_workers = num_workers
        self.name = name
        self.pin_memory = pin_memory
        self.epoch = 0
        self.skip_batches = 0
        self.history: list[EpochStats] = []
        self.consumed = {"epoch": 0, "next_batch": 0}

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Make the next pass epoch ``epoch``, starting after its first ``skip_batches`` batches (exact resume:
        the pass is replayed deterministically and the skipped batches are read but not yielded)."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def mark_consumed(self, epoch: int, index: int) -> None:
        """Record that batch ``index`` of ``epoch`` was trained on (called by the training step).

        Batches are prefetched, so what was *yielded* runs ahead of what was *trained*; checkpoints need the latter.
        """
        done = self.history and self.history[-1].epoch == epoch and index + 1 >= self.history[-1].batches
        self.consumed = {"epoch": epoch + 1, "next_batch": 0} if done else {"epoch": epoch, "next_batch": index + 1}

    def state_dict(self) -> dict[str, int]:
        """The data position Lightning stores in checkpoints: the next epoch and batch to train on."""
        return dict(self.consumed)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a stored position (Lightning calls this before creating the epoch's iterator)."""
        self.consumed = dict(state)
        self.set_epoch(state["epoch"], skip_batches=state["next_batch"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """One epoch of batches; each carries ``epoch`` and ``index`` (its position within the epoch)."""
        self.stream.epoch = self.epoch
        self.stream.rank, self.stream.world_size = distributed_placement()
        self.skips.reset()
        # Workers are recreated every epoch (not persistent) so they see the new epoch number.
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            persistent_workers=False)
        stats = EpochStats(epoch=self.epoch)
        skip, self.skip_batches = self.skip_batches, 0
        for index, batch in enumerate(loader):
            stats.batches += 1
            stats.rows += len(batch["has_image"])
            stats.text_rows += int((~batch["has_image"]).sum())
            stats.tokens += int(batch["attention_mask"].sum())
            stats.sources.update(batch["source"])
            if index < skip:
                continue
            batch["epoch"], batch["index"] = self.epoch, index
            yield batch
        stats.skipped = self.skips.totals()
        self.history.append(stats)
        self.epoch += 1
        log.info("%s", self.report(stats))

    def report(self, stats: EpochStats) -> str:
        target = self.stream.mixer.text_ratio
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "none"
        return (f"{self.name} epoch {stats.epoch}: {stats.batches} batches, {stats.rows} rows, text-only "
                f"{stats.text_ratio:.1%} (target {target:.1%}), {stats.tokens} tokens, sources "
                f"{dict(stats.sources)}, skipped: {skipped}")
