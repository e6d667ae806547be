"""Shard specs: what a config or flag names (a shard directory, a glob, a brace pattern, or a list of those) as the
shard paths to read. Plain Python: the data module, evaluation and the training probes all resolve shards here."""

from __future__ import annotations

import glob
from pathlib import Path

from braceexpand import braceexpand

from mmpeft.data.shards import shard_urls


def resolve_shards(spec: str | list[str] | None) -> list[str] | None:
    """Shard paths from a shard directory (its manifest), a glob, a brace pattern, or a list of those; None for None.

    Raises:
        FileNotFoundError: the spec gives no shard, or names local files that do not exist (the first few named).
    """
    if spec is None:
        return None
    specs = [spec] if isinstance(spec, str) else list(spec)
    if any(item.startswith("zoo:") for item in specs):  # zoo:tiny/data/train: the tiny shards in the cache
        from mmpeft.zoo import resolve

        specs = [resolve(item) for item in specs]
    urls: list[str] = []
    for item in specs:
        if Path(item).is_dir():
            urls += shard_urls(item)
            continue
        for pattern in braceexpand(item):
            matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            urls += matches
    missing = [u for u in urls if "://" not in u and not Path(u).exists()]
    if not urls or missing:
        raise FileNotFoundError(f"shard spec {spec!r} gives no readable shards (missing: {missing[:3]}); give a "
                                "directory written by a data_prep converter, a glob or a brace pattern")
    return urls
