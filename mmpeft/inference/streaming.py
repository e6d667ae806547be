"""Tokens shown as they are generated: transformers' ``TextStreamer`` with the text handed to a callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TextStreamer


class CallbackStreamer(TextStreamer):
    """Hands each piece of finished text to ``emit`` (e.g. ``print(piece, end="", flush=True)``).

    transformers decides when text is final (whole words; a multi-byte character only once complete), so the pieces
    joined are the reply decoded with special tokens skipped. The prompt is skipped: generating from embeddings,
    the first ids transformers streams are the (empty) prompt. Batch size 1 only (transformers' limit).
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.emit = emit

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.emit(text)
