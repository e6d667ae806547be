"""Weighted mixing: interleave several row streams, each row drawn from source i with probability w_i / sum(w).

The draws come from a ``random.Random`` seeded by (seed, epoch, rank, worker), so a run is reproducible (and an
epoch replays exactly for resume) and ranks/workers draw different but fixed sequences. No index of any stream is
held in memory. A source marked ``repeat`` is restarted (reshuffled: a distinct pseudo-epoch per pass) whenever it
runs out; the epoch ends when any other source runs out (with only repeating sources it never ends: the caller
bounds it with ``rows_per_epoch``). Rows drawn per source are tallied in shared memory (``drawn``), so the loader
can report each source's realised share against its target.

``ReplayMixer`` is the special case the ``train_shards`` / ``text_shards`` / ``text_ratio`` options build: a text
source of weight ``text_ratio`` that repeats, and an image source of weight ``1 - text_ratio`` whose end ends the
epoch (either alone when the ratio is 0 or 1).
"""

from __future__ import annotations

import dataclasses
import random
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from mmpeft.data.pipeline import NoUsableRows, Placement

Rows = Callable[[Placement], Iterable[Any]]
MAX_SLOTS = 257  # the main process and up to 256 DataLoader workers tally draws


@dataclass
class MixSource:
    """One stream of a mixture: its name (for reports), rows per placement, weight (> 0) and whether it repeats."""

    name: str
    rows: Rows
    weight: float
    repeat: bool = False


class WeightedMixer:
    """Row-level weighted mixing of several row streams (module docstring).

    Args:
        sources: the streams, at least one; names unique, weights > 0.
        seed: base seed.
        named: whether the loader reports per-source shares (``data/share/<name>``); False for ``ReplayMixer``,
            whose text / image split is reported as the text-only ratio.
    """

    def __init__(self, sources: list[MixSource], seed: int = 0, named: bool = True):
        if not sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        for s in sources:
            if isinstance(s.weight, bool) or not s.weight > 0:
                raise ValueError(f"source {s.name}: weight {s.weight!r} must be > 0")
        self.sources = list(sources)
        self.seed = seed
        self.named = named
        total = sum(s.weight for s in sources)
        running, self.cumulative = 0.0, []
        for s in sources:
            running += s.weight
            self.cumulative.append(running / total)
        self.cumulative[-1] = 1.0
        self.drawn = torch.zeros(MAX_SLOTS, len(sources), dtype=torch.long).share_memory_()

    @property
    def targets(self) -> dict[str, float]:
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    @property
    def endless(self) -> bool:
        """Whether no source's end ends the epoch (every source repeats)."""
        return all(s.repeat for s in self.sources)

    def drawn_totals(self) -> dict[str, int]:
        return dict(zip((s.name for s in self.sources), self.drawn.sum(0).tolist()))

    def rows(self, place: Placement) -> Iterator[Any]:
        rng = random.Random(f"{self.seed}-mix-{place.epoch}-{place.rank}-{place.worker}")
        tally = self.drawn[place.slot]
        streams = [_restarting(s, place) if s.repeat else iter(s.rows(place)) for s in self.sources]
        if len(streams) == 1:
            for row in streams[0]:
                tally[0] += 1
                yield row
            return
        while True:
            i = bisect_right(self.cumulative, rng.random())  # the first source whose cumulative share exceeds u
            row = next(streams[i], None)
            if row is None:  # a non-repeating source ran out: the epoch ends
                return
            tally[i] += 1
            yield row


class ReplayMixer(WeightedMixer):
    """Row-level mixing of an image stream and a text-only replay stream (module docstring).

    Args:
        image_rows: the image stream for a placement (e.g. ``ShardRows``), or None (then ``text_ratio`` must be 1).
        text_rows: the text-only stream for a placement, or None (then ``text_ratio`` must be 0).
        text_ratio: probability that a row is text-only, in [0, 1].
        seed: base seed.
    """

    def __init__(self, image_rows: Rows | None, text_rows: Rows | None, text_ratio: float, seed: int = 0):
        if not 0.0 <= text_ratio <= 1.0:
            raise ValueError(f"text_ratio must be in [0, 1], got {text_ratio}")
        if text_ratio > 0 and text_rows is None:
            raise ValueError(f"text_ratio={text_ratio} needs text-only shards (data.text_shards)")
        if text_ratio < 1 and image_rows is None:
            raise ValueError(f"text_ratio={text_ratio} < 1 needs image shards")
        if text_ratio == 0.0:
            sources = [MixSource("image", image_rows, 1.0)]
        elif text_ratio == 1.0:
            sources = [MixSource("text", text_rows, 1.0)]
        else:  # text first: a draw u < text_ratio picks text, as the replay mix always drew
            sources = [MixSource("text", text_rows, text_ratio, repeat=True),
                       MixSource("image", image_rows, 1.0 - text_ratio)]
        super().__init__(sources, seed=seed, named=False)
        if 0.0 < text_ratio < 1.0:
            self.cumulative[0] = text_ratio  # exactly the ratio, not text_ratio / (text_ratio + 1 - text_ratio)
        self.image_rows = image_rows
        self.text_rows = text_rows
        self.text_ratio = text_ratio


def _restarting(source: MixSource, place: Placement) -> Iterator[Any]:
    """Cycle through the stream, restarting it (reshuffled: a distinct pseudo-epoch per pass) when it ends."""
    passes = 0
    while True:
        empty = True
        for row in source.rows(dataclasses.replace(place, epoch=place.epoch * 1000 + passes)):
            empty = False
            yield row
        if empty:  # restarting an empty stream would spin forever
            raise NoUsableRows(f"the repeating source {source.name!r} gave no usable row in a whole pass (the "
                               "text-only replay stream, for data.text_shards); check its data")
        passes += 1
