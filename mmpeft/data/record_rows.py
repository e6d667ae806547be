"""``RecordRows``: the rows of a non-shard source (LLaVA / ShareGPT JSON, messages JSONL, ``datasets`` tables) for
one placement, with the same contract as ``ShardRows``.

Records are split across ranks, then DataLoader workers, from one order per epoch (a permutation seeded by
``seed`` and the epoch, the same on every rank), so no record is read twice in an epoch; ``resampled`` draws
records with replacement forever (per rank and worker). Each record goes through its layout
(``mmpeft.data.record_layouts``), its images are read (paths under ``image_root``, or inline bytes), and the result
enters ``SampleProcessor.process``, the same step shard samples end in. A bad record is one skip in ``SkipCounts``
with the converters' reasons, its message naming ``file:line`` / ``file[index]`` (or raised when ``strict``).

For ``SkipCounts`` the source is one registered "shard" (its first path) whose expected count is the number of
records, so the loader's reports and the no-usable-row check treat it like shards; nothing can be lost from a
table (every record becomes a row or a counted skip).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmpeft.data.images import read_image_file
from mmpeft.data.integrity import ShardOutcome
from mmpeft.data.pipeline import NoUsableRows, Placement, SampleProcessor, SkipCounts
from mmpeft.data.record_layouts import apply_columns, image_bytes, read_layout
from mmpeft.data.record_tables import HFTable, hf_layout, open_table
from mmpeft.data.schema import SCHEMA_VERSION, SampleError, image_field
from mmpeft.data.sources import SourceSpec


class RecordRows:
    """The rows of one non-shard source (see module docstring).

    Args:
        spec: the validated source (``mmpeft.data.sources.check_sources``).
        processor: record -> row.
        skips: shared counts.
        shuffle: a fresh record order per epoch (else file order).
        resampled: draw records with replacement forever (the caller bounds the epoch).
        strict: raise the first ``SampleError`` instead of counting it.
    """

    def __init__(self, spec: SourceSpec, processor: SampleProcessor, skips: SkipCounts, *, shuffle: bool = True,
                 resampled: bool = False, seed: int = 0, strict: bool = False):
        self.spec = spec
        self.table = open_table(spec)
        self.layout = spec.format if spec.format in ("llava", "sharegpt", "messages") else spec.layout
        if self.layout is None:
            columns = self.table.columns if isinstance(self.table, HFTable) else []
            self.layout = hf_layout(columns, spec.columns)
            if self.layout is None:
                raise ValueError(f"data.sources {spec.name}: columns {columns} show no layout (no messages, text or "
                                 "conversations column): set layout, or map the columns with columns:")
        self.image_root = Path(spec.image_root) if spec.image_root else _default_root(spec.paths[0])
        self.processor = processor
        self.skips = skips
        self.shuffle = shuffle
        self.resampled = resampled
        self.seed = seed
        self.strict = strict
        self.urls = [spec.paths[0]]
        self.first_shard = skips.register(self.urls, {self.urls[0]: len(self.table)})

    def __len__(self) -> int:
        return len(self.table)

    def indices_for(self, place: Placement) -> Iterator[int]:
        """This placement's record indices: a disjoint slice of the epoch's order, or endless draws."""
        n = len(self.table)
        if self.resampled:
            rng = random.Random(f"{self.seed}-records-{place.epoch}-{place.rank}-{place.worker}")
            while n:
                yield rng.randrange(n)
            return
        readers = place.world_size * place.num_workers
        if n < readers:
            raise ValueError(f"data.sources {self.spec.name}: {n} record(s) cannot feed {place.world_size} rank(s) x "
                             f"{place.num_workers} worker(s); use fewer workers or more records")
        order = list(range(n))
        if self.shuffle:
            random.Random(f"{self.seed}-records-{place.epoch}").shuffle(order)  # same order on every rank
        yield from order[place.rank :: place.world_size][place.worker :: place.num_workers]

    def __call__(self, place: Placement) -> Iterator[dict[str, Any]]:
        samples = rows = 0
        for i in self.indices_for(place):
            samples += 1
            try:
                row = self.row(i)
            except SampleError as error:
                if self.strict:
                    raise
                self.skips.add(error, place.slot)
                if self.resampled and not rows and samples >= max(len(self.table), 1) * 4:
                    raise NoUsableRows(f"data.sources {self.spec.name}: {samples} draws from {self.urls[0]} gave no "
                                       f"usable row; skipped: {self.skips.totals()}") from None
                continue
            rows += 1
            self.skips.add_row(self.first_shard, place.slot)
            yield row
        # only reached when this placement's slice was read to its end
        self.skips.add_read(ShardOutcome(self.urls[0], samples, samples), self.first_shard, place.slot)

    def row(self, i: int) -> dict[str, Any]:
        """Record ``i`` as a row (``SampleProcessor.process``); raises ``SampleError``."""
        where = self.table.where(i)
        raw = self.table.raw(i)
        if isinstance(raw, dict):
            raw = apply_columns(raw, self.spec.columns)
        fields, refs = read_layout(raw, self.layout, f"{self.spec.name}-{i}", where, self.spec.placement)
        files: dict[str, bytes] = {}
        for k, ref in enumerate(refs):
            data, path = image_bytes(ref, where)
            ext = "bin"
            if data is None:
                data, ext = read_image_file(self.image_root / path, where, verify=False)
            files[image_field(k, ext)] = data
        record = {"schema": SCHEMA_VERSION, "id": fields["id"], "source": self.spec.name, "images": list(files),
                  "conversations": fields.get("conversations"), "text": fields.get("text"), "eval": fields["eval"]}
        return self.processor.process(record, files, where)


def _default_root(path: str) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent
