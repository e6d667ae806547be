"""Shard integrity: read one shard, count the samples it gave, and compare with its manifest's count.

Rows a shard's manifest lists but a complete read did not give are LOST, under one reason (``LOST_REASONS``):

- ``missing_shard``: the file cannot be opened.
- ``truncated_shard``: the file ends before its archive does (cut inside a member, or at a member boundary before
  the end-of-archive blocks).
- ``corrupt_shard``: unreadable tar data (a member header with a bad checksum, garbage, an error mid-read).
- ``short_shard``: the tar reads whole but holds fewer samples than its manifest says (a stale manifest).

Why counting, and a header walk for the reason: webdataset reads tars with ``tarfile``'s stream mode, which ends
*quietly* on a cut at a member boundary, a cut inside a header, or a bad header after the first member (tarfile
takes each for the end of the archive); only a cut inside member data raises. So the manifest count is the signal
and ``scan_tar`` (a walk over the member headers of a local ``.tar``) names the damage. Local shards without a
manifest count are walked after every complete read, so their damage is still reported, though not how many rows
it cost.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webdataset.tariterators import tarfile_samples

from mmpeft.data.schema import SampleError
from mmpeft.data.shards import MANIFEST, read_manifest

log = logging.getLogger(__name__)

LOST_REASONS = ("missing_shard", "truncated_shard", "corrupt_shard", "short_shard")
"""Every reason rows of a shard can be lost for; lost counts are kept per shard and reason."""

BLOCK = tarfile.BLOCKSIZE
_warned_unchecked: set[tuple[str, ...]] = set()


class ShardDamaged(ValueError):
    """A shard lost rows and the reader was told to be strict."""


def is_local_tar(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:") and url.endswith(".tar")


def manifest_counts(urls: list[str]) -> dict[str, int | None]:
    """Samples per shard, from the ``manifest.json`` beside each shard; None where no manifest lists it.

    Shards given by a glob or brace pattern are checked too when their directory has a manifest that lists them.
    Warns once per set of shards that none can be checked for (counts cannot be compared: damage is still
    detected by walking the tar, but not how many rows it cost).
    """
    listed: dict[Path, dict[str, int]] = {}
    counts: dict[str, int | None] = {}
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            counts[url] = None
            continue
        path = Path(url)
        if path.parent not in listed:
            listed[path.parent] = ({s["name"]: int(s["samples"]) for s in read_manifest(path.parent)["shards"]}
                                   if (path.parent / MANIFEST).is_file() else {})
        counts[url] = listed[path.parent].get(path.name)
    unchecked = tuple(u for u, n in counts.items() if n is None)
    if unchecked and unchecked not in _warned_unchecked:
        _warned_unchecked.add(unchecked)
        log.warning("%d shard(s) have no manifest count (e.g. %s): rows lost to damaged shards cannot be counted "
                    "for them; give the shard directory written by a data_prep converter (it has manifest.json) to "
                    "check every shard", len(unchecked), unchecked[0])
    return counts


@dataclass
class ShardOutcome:
    """A complete read of one shard: what it gave against what its manifest says.

    ``reason`` is set when rows were lost (``lost > 0``) or, for a shard without a manifest count
    (``expected is None``), when the read stopped early: then ``lost`` is None (unknown).
    """

    url: str
    samples: int
    expected: int | None
    reason: str | None = None
    detail: str = ""

    @property
    def lost(self) -> int | None:
        return None if self.expected is None else max(self.expected - self.samples, 0)

    def message(self) -> str:
        count = "an unknown number of rows (no manifest count)" if self.lost is None else f"{self.lost} row(s)"
        return (f"{self.url}: {self.reason}, {count} lost ({self.samples} of "
                f"{'?' if self.expected is None else self.expected} samples read; {self.detail})")


class ShardReader:
    """The raw samples of one shard (webdataset's tar reader, as ``{"__key__", "__url__", "json", ...}``).

    A tar error stops the shard: what follows an unreadable block cannot be trusted. Iterate once, to the end, then
    ``outcome(expected)`` says what the read came to; a read abandoned early says nothing about the shard.
    """

    def __init__(self, url: str):
        self.url = url
        self.samples = 0
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in tarfile_samples([{"url": self.url}], handler=self._stop):
            self.samples += 1
            yield sample

    def _stop(self, error: BaseException) -> bool:
        if self.error is None:
            self.error = error
        return False

    def outcome(self, expected: int | None) -> ShardOutcome:
        """Compare the finished read with ``expected`` samples (None: unchecked; the tar is still walked when the
        read stopped on an error)."""
        if expected is not None and self.samples > expected:
            log.warning("%s gave %d samples but its manifest lists %d: the manifest is stale (re-run the converter)",
                        self.url, self.samples, expected)
        short = expected is not None and self.samples < expected
        if self.error is None and not short:
            if expected is not None or not is_local_tar(self.url):
                return ShardOutcome(self.url, self.samples, expected)
            found = scan_tar(self.url)  # no count to compare with: the structure is the only check left
            return ShardOutcome(self.url, self.samples, expected, *found) if found else \
                ShardOutcome(self.url, self.samples, expected)
        reason, detail = diagnose(self.url, self.error)
        return ShardOutcome(self.url, self.samples, expected, reason, detail)


def diagnose(url: str, error: BaseException | None) -> tuple[str, str]:
    """``(reason, detail)`` for a shard read that stopped early or gave too few samples."""
    local = "://" not in url and not url.startswith("pipe:")
    if (local and not os.path.isfile(url)) or isinstance(error, (FileNotFoundError, PermissionError,
                                                                 IsADirectoryError)):
        return "missing_shard", f"cannot be opened: {error or 'no such file'}"
    if is_local_tar(url):
        found = scan_tar(url)
        if found:
            return found
    if error is not None:
        text = str(error.args[0]) if error.args else repr(error)
        reason = "truncated_shard" if "unexpected end" in text or isinstance(error, EOFError) else "corrupt_shard"
        return reason, f"read error: {text}"
    return "short_shard", ("the tar reads whole but holds fewer samples than its manifest lists (a stale manifest, "
                           "or a shard replaced after conversion)")


def scan_tar(path: str | Path) -> tuple[str, str] | None:
    """Walk the member headers of an uncompressed tar; ``(reason, detail)`` for the first damage, None if whole.

    Every member (PAX and GNU long-name headers included) is a 512-byte header with a checksum, followed by its
    data rounded up to 512 bytes; the archive ends with a zero block. Reads only headers (one seek per member).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(BLOCK)
            if not block:
                return "truncated_shard", f"the file ends at byte {offset}, at a member boundary, with no " \
                                          "end-of-archive marker"
            if len(block) < BLOCK:
                return "truncated_shard", f"the file ends inside the member header at byte {offset}"
            if block.count(0) == BLOCK:
                return _after_end_marker(f, offset)
            try:
                info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
            except tarfile.HeaderError as e:
                return "corrupt_shard", f"bad member header at byte {offset} ({e})"
            end = offset + BLOCK + -(-info.size // BLOCK) * BLOCK
            if offset + BLOCK + info.size > size:
                return "truncated_shard", (f"member {info.name!r} at byte {offset} needs {info.size} data bytes; "
                                           f"the file ends at byte {size}")
            offset = end


def _after_end_marker(f, offset: int) -> tuple[str, str] | None:
    """A zero block ends the archive; members hidden behind it (a header overwritten with zeros) are damage."""
    f.seek(offset)
    position = offset
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            first = position + next(i for i, b in enumerate(chunk) if b)
            return "corrupt_shard", (f"a zero block at byte {offset} ends the archive, but data follows at byte "
                                     f"{first} (an overwritten member header)")
        position += len(chunk)
    return None


def outcome_summary(outcomes: list[ShardOutcome]) -> dict[str, Any]:
    """JSON-ready totals of shard outcomes: ``lost`` rows by shard and reason, shards ``damaged`` without a count
    (rows lost unknown) by reason, and how many complete reads were ``unchecked`` (no manifest count)."""
    lost: dict[str, dict[str, int]] = {}
    damaged: dict[str, str] = {}
    for o in outcomes:
        if o.reason is None:
            continue
        if o.lost is None:
            damaged[o.url] = o.reason
        elif o.lost:
            per = lost.setdefault(o.url, {})
            per[o.reason] = per.get(o.reason, 0) + o.lost
    return {"lost_rows": sum(n for per in lost.values() for n in per.values()), "lost": lost, "damaged": damaged,
            "unchecked_reads": sum(o.expected is None for o in outcomes)}


def describe_losses(lost: dict[str, dict[str, int]], damaged: dict[str, str], limit: int = 5) -> str:
    """One line: ``7 rows (a.tar: truncated_shard 5, b.tar: corrupt_shard 2), rows lost unknown in c.tar
    (truncated_shard, no manifest)``; ``none`` when nothing was lost."""
    parts = []
    if lost:
        total = sum(n for per in lost.values() for n in per.values())
        items = [f"{url}: " + ", ".join(f"{r} {n}" for r, n in sorted(per.items())) for url, per in lost.items()]
        more = f", and {len(items) - limit} more shard(s)" if len(items) > limit else ""
        parts.append(f"{total} rows ({'; '.join(items[:limit])}{more})")
    if damaged:
        items = [f"{url} ({reason})" for url, reason in damaged.items()]
        more = f", and {len(items) - limit} more" if len(items) > limit else ""
        parts.append(f"an unknown number of rows (no manifest count) in {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or "none"


class PartialData(ValueError):
    """Rows of a set that must be whole were skipped or lost, and a partial set was not allowed."""


class ShardAudit:
    """What a single-process reader (evaluation) got from its shards: complete-read outcomes and skipped samples.

    Args:
        allow_partial: when False, the first skipped sample or lost row raises ``PartialData`` at once (no work is
            spent on a set that will be refused).
        allow_hint: how the user allows a partial set, for that message.
    """

    def __init__(self, allow_partial: bool = True, allow_hint: str = "allow_partial=True"):
        self.allow_partial = allow_partial
        self.allow_hint = allow_hint
        self.outcomes: list[ShardOutcome] = []
        self.skipped: dict[str, int] = {}

    def skip(self, error: SampleError) -> None:
        self.skipped[error.reason] = self.skipped.get(error.reason, 0) + 1
        self._refuse(f"a sample was skipped ({error.reason}): {error}")

    def finish(self, outcome: ShardOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.reason is not None:
            log.warning("lost rows: %s", outcome.message())
            self._refuse(outcome.message())

    def _refuse(self, what: str) -> None:
        if not self.allow_partial:
            raise PartialData(f"refusing to score a partial set: {what}.\nFix the data (re-run its data_prep "
                              f"converter; damaged shards: delete them and their .stats.json first, or use "
                              f"--overwrite) or score what remains with {self.allow_hint}; the scores then record "
                              "how many rows were missing and why")

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``missing_rows`` (skipped + lost where counted), ``skipped`` by reason, ``lost`` by shard and
        reason, ``damaged`` shards without a count, ``shards_checked`` / ``unchecked_reads`` (no manifest count)."""
        totals = outcome_summary(self.outcomes)
        return {"missing_rows": sum(self.skipped.values()) + totals["lost_rows"], "skipped": dict(self.skipped),
                **totals, "shards_checked": sum(o.expected is not None for o in self.outcomes)}
