"""Local paths in tower arguments, made independent of the current directory.

Tower ``init_args`` are saved in ``mmpeft_config.json`` and read back later, often from another directory. A
relative path that exists when the tower is built is stored as an absolute path, so the saved config means the
same files wherever it is loaded from. Hub ids, ``zoo:`` names and pretrained tags do not exist as local paths and
pass through unchanged.
"""

from __future__ import annotations

import os

LOCAL_DIR = "local-dir:"  # open_clip's prefix for a local model directory


def absolute_if_local(value: str | None) -> str | None:
    """``value`` as an absolute path if it names an existing local file or directory, else unchanged."""
    if not value or ":" in value.split("/")[0]:  # None, "", zoo:/hf-hub:/local-dir: prefixes, URLs
        return value
    path = os.path.expanduser(value)
    return os.path.abspath(path) if os.path.exists(path) else value


def absolute_open_clip_name(name: str) -> str:
    """``local-dir:relative/dir`` -> ``local-dir:/absolute/dir``; a ``zoo:`` name (``zoo:tiny/open_clip``) ->
    ``local-dir:`` its directory in the cache (open_clip reads local models only by that prefix); other open_clip
    names unchanged."""
    if name.startswith("zoo:"):
        from mmpeft.zoo import resolve  # torch-heavy; only for zoo names

        return LOCAL_DIR + resolve(name)
    if name.startswith(LOCAL_DIR):
        return LOCAL_DIR + absolute_if_local(name.removeprefix(LOCAL_DIR))
    return name
