"""Replay mixing: interleave an image stream and a text-only stream at a fixed ratio, streaming.

Each row is drawn from the text stream with probability ``text_ratio``, from a ``random.Random`` seeded by
(seed, epoch, rank, worker), so a run is reproducible and ranks/workers draw different but fixed sequences. No
index of either stream is held in memory. The epoch ends when the primary stream ends (the image stream, or the
text stream when ``text_ratio == 1``); the other stream is restarted whenever it runs out.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mmpeft.data.pipeline import NoUsableRows, Placement

Rows = Callable[[Placement], Iterable[Any]]


class ReplayMixer:
    """Row-level mixing of two row streams.

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
        self.image_rows = image_rows
        self.text_rows = text_rows
        self.text_ratio = text_ratio
        self.seed = seed

    def rows(self, place: Placement) -> Iterator[Any]:
        rng = random.Random(f"{self.seed}-mix-{place.epoch}-{place.rank}-{place.worker}")
        if self.text_ratio == 0.0:
            yield from self.image_rows(place)
            return
        if self.text_ratio == 1.0:
            yield from self.text_rows(place)
            return
        images = iter(self.image_rows(place))
        texts = _restarting(self.text_rows, place)
        for take_text in iter(lambda: rng.random() < self.text_ratio, None):
            if take_text:
                yield next(texts)
            else:
                row = next(images, None)
                if row is None:
                    return
                yield row


def _restarting(factory: Rows, place: Placement) -> Iterator[Any]:
    """Cycle through the stream, restarting it (reshuffled: a distinct pseudo-epoch per pass) when it ends."""
    passes = 0
    while True:
        empty = True
        for row in factory(dataclasses.replace(place, epoch=place.epoch * 1000 + passes)):
            empty = False
            yield row
        if empty:  # restarting an empty stream would spin forever
            raise NoUsableRows("the text-only replay stream gave no usable row in a whole pass; check its shards")
        passes += 1
