"""The training / evaluation loader: mixed shard streams -> collated batches, with per-epoch statistics.

``VLStream`` is the ``IterableDataset`` each DataLoader worker runs: it finds its placement (epoch, rank, worker),
mixes its share of the image and text-only rows, and batches them. ``VLLoader`` wraps the DataLoader, advances the
epoch, and after every pass reports what was seen: rows, the realised text-only ratio against the target, rows
per source, skipped samples by reason, and rows lost from damaged shards (by shard and reason, against the
manifests). A pass that gives no batch, or a stream that gives no row, raises ``NoUsableRows`` naming the shards,
the reasons and the fix: training on nothing would otherwise repeat empty epochs (or draw resampled shards)
forever. An evaluation loader (``allow_partial`` not None: val / test) judges every pass by mmpeft's rule for sets
that must be whole: a pass that skipped or lost rows raises ``PartialData`` at its end unless partial sets are
allowed, and then warns.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmpeft.data.collate import Collator, batch_rows
from mmpeft.data.integrity import LOST_REASONS, PartialData, describe_losses
from mmpeft.data.mixing import ReplayMixer, WeightedMixer
from mmpeft.data.pipeline import NoUsableRows, Placement, ShardRows, SkipCounts
from mmpeft.data.record_rows import RecordRows
from mmpeft.types import Batch

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
        mixer: a ``WeightedMixer`` of named sources instead of ``image_rows`` / ``text_rows`` / ``text_ratio``.
        bucket_window: length bucketing window in batches (0: off).
        rows_per_epoch: cap on rows per rank and epoch (required with resampled shards).
        drop_last: drop a final partial batch.
    """

    def __init__(self, image_rows: ShardRows | None, text_rows: ShardRows | None, text_ratio: float,
                 batch_size: int, collate: Collator, *, mixer: WeightedMixer | None = None, bucket_window: int = 0,
                 rows_per_epoch: int | None = None, drop_last: bool = False, seed: int = 0):
        self.mixer = mixer if mixer is not None else ReplayMixer(image_rows, text_rows, text_ratio, seed=seed)
        # the sources whose end is the epoch's end: an epoch without one that ever ends needs a cap
        ending = [s.rows for s in self.mixer.sources if not s.repeat]
        if rows_per_epoch is None and all(getattr(rows, "resampled", False) for rows in ending):
            raise ValueError("resampled shards never end: set rows_per_epoch" if ending else
                             "every source repeats, so an epoch never ends: set rows_per_epoch")
        self.batch_size = batch_size
        self.collate = collate
        self.bucket_window = bucket_window
        self.rows_per_epoch = rows_per_epoch
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def __iter__(self) -> Iterator[Batch]:
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


# what to do about each reason a stream gave nothing (skip reasons from the schema, lost reasons from integrity)
_RECONVERT = ("delete the damaged shard and its .stats.json and re-run its data_prep converter (it rewrites missing "
              "shards), or re-run it with --overwrite")
FIXES = {
    "too_long": "raise data.max_length, or set data.overlong=truncate to keep over-long rows cut to length",
    "corrupt_image": "check the image files, then re-run the data_prep converter (it verifies images)",
    "missing_image": "check the image files, then re-run the data_prep converter (it verifies images)",
    **{reason: _RECONVERT for reason in LOST_REASONS},
    "short_shard": "re-run the data_prep converter: the manifest does not describe these shards",
}
_DEFAULT_FIX = "the warnings above name a shard and key per reason; re-run the data_prep converter on the source"


@dataclass
class EpochStats:
    """What one pass over a ``VLLoader`` delivered, and what it did not.

    ``drawn``: rows drawn per named source (``data.sources``), ``targets`` their target shares; empty for the
    image / text replay mix. ``skipped``: samples skipped, by reason. ``lost``: rows lost, by shard and reason
    (complete shard reads against their manifest counts; counted per read, so a resampled shard read twice counts
    twice). ``damaged``: shards without a manifest count whose read stopped early (rows lost unknown), by reason.
    ``unchecked_reads``: complete reads of shards without a manifest count.
    """

    epoch: int
    batches: int = 0
    rows: int = 0
    text_rows: int = 0
    tokens: int = 0
    sources: Counter = field(default_factory=Counter)
    drawn: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    lost: dict[str, dict[str, int]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)
    unchecked_reads: int = 0

    @property
    def text_ratio(self) -> float:
        return self.text_rows / max(self.rows, 1)

    @property
    def lost_rows(self) -> int:
        return sum(n for per in self.lost.values() for n in per.values())

    @property
    def partial(self) -> bool:
        """Whether any sample was skipped or any row lost (counted, or unknown in a shard without a manifest)."""
        return bool(sum(self.skipped.values()) or self.lost_rows or self.damaged)

    def metrics(self) -> dict[str, float]:
        """Per-epoch numbers to log; the same keys every epoch and rank (``lost_<reason>`` for every reason)."""
        by_reason = Counter()
        for per in self.lost.values():
            by_reason.update(per)
        drawn = sum(self.drawn.values())
        return {"rows": self.rows, "skipped": sum(self.skipped.values()), "lost": self.lost_rows,
                "damaged_shards": len(self.damaged), **{f"lost_{r}": by_reason[r] for r in LOST_REASONS},
                **{f"source_rows/{name}": n for name, n in self.drawn.items()},
                **{f"share/{name}": n / max(drawn, 1) for name, n in self.drawn.items()}}

    def share_report(self) -> str:
        """``llava 61.2% (target 60.0%), ...``: each named source's share of the rows drawn, against its weight."""
        drawn = max(sum(self.drawn.values()), 1)
        return ", ".join(f"{name} {n / drawn:.1%} (target {self.targets.get(name, 0):.1%})"
                         for name, n in self.drawn.items())


class VLLoader:
    """Iterable of batches; each ``iter()`` is one epoch. Lightning accepts it wherever a DataLoader goes.

    Args:
        stream: the ``VLStream``.
        skips: the shared skip counts its shard readers write.
        num_workers: DataLoader worker processes.
        name: used in the end-of-epoch report (``train``, ``val``, ...).
        allow_partial: None: a stream that may lose rows (training, Fisher, probes): counted and reported only.
            False: an evaluation set that must be whole: a pass that skipped a sample or lost a row raises
            ``PartialData`` at its end. True: such a pass is scored, with a warning.
        allow_hint: how the user allows a partial set, for the ``PartialData`` message.
    """

    def __init__(self, stream: VLStream, skips: SkipCounts, num_workers: int = 0, name: str = "train",
                 pin_memory: bool = False, allow_partial: bool | None = None,
                 allow_hint: str = "allow_partial=True"):
        self.stream = stream
        self.skips = skips
        self.num_workers = num_workers
        self.name = name
        self.pin_memory = pin_memory
        self.allow_partial = allow_partial
        self.allow_hint = allow_hint
        self.epoch = 0
        self.skip_batches = 0
        self.history: list[EpochStats] = []
        self.current: EpochStats | None = None  # the pass being read (``partial_stats``)
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

    def __iter__(self) -> Iterator[Batch]:
        """One epoch of ``Batch``es; each carries ``epoch`` and ``index`` (its position within the epoch)."""
        self.stream.epoch = self.epoch
        self.stream.rank, self.stream.world_size = distributed_placement()
        self.skips.reset()
        self.stream.mixer.drawn.zero_()
        # Workers are recreated every epoch (not persistent) so they see the new epoch number.
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            persistent_workers=False)
        stats = EpochStats(epoch=self.epoch)
        self.current = stats
        skip, self.skip_batches = self.skip_batches, 0
        batches = iter(loader)
        failed = False
        try:
            for index, batch in enumerate(batches):
                stats.batches += 1
                stats.rows += len(batch["has_image"])
                stats.text_rows += int((~batch["has_image"]).sum())
                stats.tokens += int(batch["attention_mask"].sum())
                stats.sources.update(batch["source"])
                if index < skip:
                    continue
                batch["epoch"], batch["index"] = self.epoch, index
                yield batch
        except NoUsableRows as error:  # from a reader, maybe a worker's: restated below with every process's counts
            # The re-raised worker error sits in a reference cycle with its traceback's frames, which hold the
            # DataLoader iterator: left to the garbage collector, its workers are shut down after its queues are
            # finalised and each waits out a 5 s join timeout. Cut the cycle and drop the iterator here instead.
            error.__traceback__ = None
            failed = True
        if failed:
            del batches
            self._collect(stats)
            raise NoUsableRows(self.nothing_usable(stats))
        self._collect(stats)
        self.history.append(stats)
        self.epoch += 1
        log.log(logging.WARNING if stats.lost or stats.damaged else logging.INFO, "%s", self.report(stats))
        self.judge(stats)
        if stats.batches == 0 or any(self._gave_nothing(rows, read_through=True) for rows in self._readers()):
            raise NoUsableRows(self.nothing_usable(stats))

    def partial_stats(self) -> EpochStats | None:
        """The pass in progress, when training stopped before its end (``max_steps``): rows and skipped samples so
        far (this process's workers); rows lost from shards are only known for shards read to their end. None when
        the last pass ended."""
        if self.current is None or (self.history and self.history[-1] is self.current):
            return None
        self._collect(self.current)
        return self.current

    def finish_eval_pass(self) -> dict[str, float]:
        """``EpochStats.metrics()`` of the latest pass, for the evaluation loop's end (empty before any pass).

        A pass read to its end was judged as it ended; one cut short (``limit_val_batches``, the sanity check) is
        judged here on what it read: skipped samples so far, rows lost in the shards it read through.
        """
        cut = self.partial_stats()
        if cut is not None:
            self.judge(cut, cut_short=True)
        return {} if self.current is None else self.current.metrics()

    def judge(self, stats: EpochStats, cut_short: bool = False) -> None:
        """The rule for evaluation sets: nothing for a training loader (``allow_partial`` None) or a whole pass;
        else raise ``PartialData`` (not allowed) or warn (allowed)."""
        if self.allow_partial is None or not stats.partial:
            return
        if not self.allow_partial:
            raise PartialData(self.partial_message(stats, cut_short))
        log.warning("%s data is partial (%s), scored anyway as allowed: %s rows read, %s; logged as %s/data/*",
                    self.name, self._counts(stats), stats.rows, self._shards_hit(stats) or "no shard named",
                    self.name)

    def partial_message(self, stats: EpochStats, cut_short: bool = False) -> str:
        """The ``PartialData`` error: loader, shards, reasons and counts, the fix for each reason, and the option
        that allows a partial set."""
        reasons = {*stats.skipped, *(r for per in stats.lost.values() for r in per), *stats.damaged.values()}
        fixes = sorted({FIXES.get(r, _DEFAULT_FIX) for r in reasons})
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "none"
        read = f"{stats.rows} rows read{' before the pass was cut short' if cut_short else ''}"
        return (f"refusing to score a partial {self.name} set (epoch {stats.epoch}, {read}): {self._counts(stats)}."
                f"\n  shards: {self._shards_hit(stats) or 'none named (see the skip warnings above)'}"
                f"\n  skipped: {skipped}\n  lost: {describe_losses(stats.lost, stats.damaged)}"
                f"\n  fix: " + "\n       ".join(fixes)
                + f"\n  or score what remains with {self.allow_hint}: the counts are then logged as "
                  f"{self.name}/data/skipped, {self.name}/data/lost, ... and a warning names the shards")

    @staticmethod
    def _counts(stats: EpochStats) -> str:
        unknown = f", rows lost unknown in {len(stats.damaged)} shard(s)" if stats.damaged else ""
        return f"{sum(stats.skipped.values())} sample(s) skipped, {stats.lost_rows} row(s) lost{unknown}"

    def _shards_hit(self, stats: EpochStats, limit: int = 5) -> str:
        """``a.tar (2 of 8 samples skipped; truncated_shard: 4 rows lost); ...`` for the shards that skipped or lost
        rows (skips per shard from its complete reads)."""
        hit = []
        for rows in self._readers():
            reads = self.skips.shard_reads(rows.first_shard, len(rows.urls)).tolist()
            for url, (n, samples, given) in zip(rows.urls, reads):
                parts = [f"{samples - given} of {samples} samples skipped"] if n and samples > given else []
                parts += [f"{r}: {k} rows lost" for r, k in sorted(stats.lost.get(url, {}).items())]
                if url in stats.damaged:
                    parts.append(f"{stats.damaged[url]}: rows lost unknown (no manifest count)")
                if parts:
                    hit.append(f"{url} ({'; '.join(parts)})")
        return "; ".join(hit[:limit]) + (f"; and {len(hit) - limit} more" if len(hit) > limit else "")

    def _collect(self, stats: EpochStats) -> None:
        stats.skipped = self.skips.totals()
        stats.lost, stats.damaged, stats.unchecked_reads = self.skips.losses()
        mixer = self.stream.mixer
        if mixer.named:
            stats.drawn, stats.targets = mixer.drawn_totals(), mixer.targets

    def _readers(self) -> list[ShardRows | RecordRows]:
        return [s.rows for s in self.stream.mixer.sources if isinstance(s.rows, ShardRows | RecordRows)]

    def _gave_nothing(self, rows: ShardRows | RecordRows, read_through: bool = False) -> bool:
        """Not a single row this pass (``read_through``: and at least one of its shards was read to its end)."""
        reads = self.skips.shard_reads(rows.first_shard, len(rows.urls))
        return bool(reads[:, SkipCounts.ROWS].sum() == 0 and (reads[:, SkipCounts.READS].sum() > 0 or not read_through))

    def nothing_usable(self, stats: EpochStats) -> str:
        """The error for a pass that gave nothing to train on: the shards of the stream(s) that gave no row, the
        skip and loss reasons, and the fix for each reason."""
        readers = [rows for rows in self._readers() if self._gave_nothing(rows)] or self._readers()
        shards = []
        for rows in readers:
            reads = self.skips.shard_reads(rows.first_shard, len(rows.urls)).tolist()
            shards += [f"{url} ({n} complete read(s): {samples} samples, {given} rows)"
                       for url, (n, samples, given) in zip(rows.urls, reads) if n or samples or given]
        listed = "; ".join(shards[:5]) + (f"; and {len(shards) - 5} more" if len(shards) > 5 else "")
        reasons = {**stats.skipped, **{r: n for per in stats.lost.values() for r, n in per.items()},
                   **{r: 0 for r in stats.damaged.values()}}
        fixes = sorted({FIXES.get(r, _DEFAULT_FIX) for r in reasons}) or [_DEFAULT_FIX]
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "none"
        return (f"{self.name} data gave no usable row (epoch {stats.epoch}, {stats.batches} batches): every sample "
                f"read from these shards was skipped or lost, so training would spin on them forever.\n"
                f"  shards read: {listed or 'none'}\n  skipped: {skipped}\n"
                f"  lost: {describe_losses(stats.lost, stats.damaged)}\n"
                f"  fix: " + "\n       ".join(fixes))

    def report(self, stats: EpochStats) -> str:
        mixer = self.stream.mixer
        target = f"target {mixer.text_ratio:.1%}" if isinstance(mixer, ReplayMixer) else "mix " + stats.share_report()
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items())) or "none"
        unchecked = (f", {stats.unchecked_reads} shard read(s) unchecked (no manifest count)"
                     if stats.unchecked_reads else "")
        return (f"{self.name} epoch {stats.epoch}: {stats.batches} batches, {stats.rows} rows, text-only "
                f"{stats.text_ratio:.1%} ({target}), {stats.tokens} tokens, sources "
                f"{dict(stats.sources)}, skipped: {skipped}, lost: {describe_losses(stats.lost, stats.damaged)}"
                f"{unchecked}")
