"""``mmpeft_config.json``, the description of a model directory: read and its whole top-level shape checked.

The file's keys are described in ``mmpeft.checkpoint``. ``read_model_config`` checks all of them before anything is
built, so a damaged or hand-edited file fails at once with the file, the key and the fix, instead of silently
skipping a check (an empty ``base_fingerprints``) or crashing after a long evaluation (a non-object ``extra``):

    format             "checkpoint" or "export"                                   required
    vlm                an object (``VisionLanguageModel.from_config`` checks its inside before building)   required
    input_format       ``InputFormat.from_dict``'s fields and types               optional (older mmpeft: none)
    base_fingerprints  ``mmpeft.fingerprint.check_fingerprints_format``'s shape   optional (older mmpeft: none)
    extra              an object of free metadata (global_step, epoch)            optional
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmpeft.data.input_format import InputFormat
from mmpeft.fingerprint import check_fingerprints_format

CONFIG_FILE = "mmpeft_config.json"
KEYS = ("format", "vlm", "input_format", "base_fingerprints", "extra")
DAMAGED = "restore the file from the run or export that wrote it (it is written by mmpeft, not by hand)"


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``mmpeft_config.json`` of a model directory, every top-level key checked (module docstring).

    Raises:
        FileNotFoundError / ValueError naming the file, the key and the fix.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an mmpeft checkpoint or export directory")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the model directory is damaged: {DAMAGED}") from None
    if not isinstance(saved, dict) or saved.get("format") not in ("checkpoint", "export") or "vlm" not in saved:
        raise ValueError(f"{path}: expected an object with format 'checkpoint' or 'export' and a vlm key; {DAMAGED}")
    unknown = sorted(set(saved) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; known: {sorted(KEYS)}. {DAMAGED}")
    if not isinstance(saved["vlm"], dict):
        raise ValueError(f"{path}: key vlm must be an object (VisionLanguageModel.config() output), got "
                         f"{type(saved['vlm']).__name__}; {DAMAGED}")
    if "input_format" in saved:
        InputFormat.from_dict(saved["input_format"], f"{path}: key input_format")
    if "base_fingerprints" in saved:
        check_fingerprints_format(saved["base_fingerprints"], f"{path}: key base_fingerprints")
    if "extra" in saved and not isinstance(saved["extra"], dict):
        raise ValueError(f"{path}: key extra must be an object of metadata (global_step, epoch, ...), got "
                         f"{saved['extra']!r}; {DAMAGED}, or set it to {{}}")
    return saved
