"""Predictions and references must cover the same ids: one check, with a message that names them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_same_ids(predictions: Mapping[Any, Any], references: Mapping[Any, Any], item: str) -> None:
    """Raise ``ValueError`` for an empty prediction set or ids present on one side only (``item``: what an id is)."""
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(f"prediction and reference ids differ: {len(missing)} {item}(s) without a prediction "
                         f"(e.g. {missing[:3]}), {len(extra)} prediction(s) without a reference (e.g. {extra[:3]})")
