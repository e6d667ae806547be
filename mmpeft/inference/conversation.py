"""A multi-turn conversation with a model: history, images added at any user turn, streamed replies.

Every reply is generated from the whole conversation rendered by the model's saved input format
(``InferenceModel.renderer``: the template, system prompt and image placement training used), so turn 3 sees
turns 1 and 2 and their images. Images attached before a user turn belong to that turn: its text's ``<image>``
markers say where they go, or, without markers, they go first, one ``<image>\\n`` each (LLaVA's placement). The
pixels of every image in the history are passed in reading order, as ``VisionLanguageModel`` expects.

A conversation longer than the format's ``max_length`` is never truncated inside a turn: with
``on_overflow="drop_oldest"`` (default) the oldest user/assistant exchanges, and their images, are dropped until
the prompt fits (``dropped_exchanges`` counts them); with ``"error"`` a ValueError says so. A single turn that does
not fit on its own is always a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmpeft.data.schema import IMAGE_MARKER, SampleError
from mmpeft.inference.images import load_image
from mmpeft.inference.model import InferenceModel
from mmpeft.inference.settings import GenerationSettings
from mmpeft.inference.streaming import CallbackStreamer

OVERFLOW = ("drop_oldest", "error")


@dataclass
class Turn:
    """One turn: ``role`` (user / assistant), its text with ``<image>`` markers, and ``[3, H, W]`` pixels of its
    images in marker order (user turns only)."""

    role: str
    content: str
    images: list[torch.Tensor] = field(default_factory=list)


def place_images(text: str, num_images: int, where: str = "") -> str:
    """``text`` with exactly ``num_images`` ``<image>`` markers: its own, or ``<image>\\n`` each in front.

    Raises:
        SampleError(image_marker): the text has markers, but not as many as images.
    """
    markers = text.count(IMAGE_MARKER)
    if markers == 0:
        return f"{IMAGE_MARKER}\n" * num_images + text
    if markers != num_images:
        raise SampleError("image_marker", f"{markers} {IMAGE_MARKER} marker(s) in the text but {num_images} image(s) "
                          "attached; give one marker per image, or none to put the images first", where)
    return text


class ChatSession:
    """A conversation with ``model`` (see module docstring).

    Args:
        model: the loaded model (``load_inference_model``), adapters on or off.
        settings: decoding options; ``settings.seed`` seeds the generators once, when the session starts (and on
            ``reset``), so a sampled conversation is reproducible.
        on_overflow: ``"drop_oldest"`` or ``"error"`` (module docstring).
    """

    def __init__(self, model: InferenceModel, settings: GenerationSettings | None = None,
                 on_overflow: str = "drop_oldest"):
        if on_overflow not in OVERFLOW:
            raise ValueError(f"on_overflow = {on_overflow!r}; use one of {OVERFLOW}")
        self.model = model
        self.settings = settings or GenerationSettings()
        self.on_overflow = on_overflow
        self.turns: list[Turn] = []
        self.pending: list[torch.Tensor] = []  # attached, waiting for the next user turn
        self.dropped_exchanges = 0
        self.settings.seed_generators()

    # ------------------------------------------------------------------ state

    def attach_image(self, image: str | Path | torch.Tensor, base_dir: str | Path | None = None) -> None:
        """Attach an image to the next user turn: a path / URL (module ``mmpeft.inference.images``) or ``[3, H, W]``
        pixels already transformed. Raises ``SampleError`` (a ValueError) naming a bad file."""
        if not isinstance(image, torch.Tensor):
            image = load_image(str(image), self.model.vlm.vision.image_transform, base_dir, where="image")
        self.pending.append(image)

    def reset(self) -> None:
        """Forget the conversation and any attached image (the settings stay; the seed is applied again)."""
        self.turns.clear()
        self.pending.clear()
        self.dropped_exchanges = 0
        self.settings.seed_generators()

    def conversation(self, user_text: str | None = None) -> list[dict[str, str]]:
        """The history as schema turns (``{"role", "content"}``, ``<image>`` markers in user turns), with
        ``user_text`` (and the attached images) as the next user turn if given."""
        turns = self.turns + ([self._next_user_turn(user_text)] if user_text is not None else [])
        return [{"role": t.role, "content": t.content} for t in turns]

    def pixel_values(self, turns: list[Turn] | None = None) -> torch.Tensor | None:
        """``[N_img, 3, H, W]``: every image of ``turns`` (default: the history) in reading order, or None."""
        images = [image for t in (self.turns if turns is None else turns) for image in t.images]
        return torch.stack(images) if images else None

    # ------------------------------------------------------------------ generation

    def prompt(self, user_text: str) -> tuple[list[int], torch.Tensor | None, int]:
        """The generation prompt for ``user_text`` as the next turn: ``(input ids, pixels, exchanges dropped)``.

        Raises:
            ValueError: the prompt is over ``max_length`` and cannot be shortened (module docstring).
        """
        turns = self.turns + [self._next_user_turn(user_text)]
        dropped = 0
        while True:
            convs = [{"role": t.role, "content": t.content} for t in turns]
            try:
                return self.model.renderer.render_prompt(convs, "chat"), self.pixel_values(turns), dropped
            except SampleError as e:
                if e.reason != "too_long":
                    raise
                if self.on_overflow == "error" or len(turns) < 3:
                    raise ValueError(self._overflow_message(e, len(turns) < 3)) from None
                turns = turns[2:]  # the oldest exchange: a user turn and its reply
                dropped += 1

    def reply(self, user_text: str, stream: Callable[[str], None] | None = None) -> str:
        """Generate the assistant's reply to ``user_text`` (with the attached images), add both turns to the
        history, and return the reply (decoded, special tokens skipped, outer whitespace stripped).

        ``stream`` receives the reply's text piece by piece while it is generated (the pieces joined are the reply
        before stripping). On any error the conversation is left as it was.
        """
        ids, pixels, dropped = self.prompt(user_text)
        vlm = self.model.vlm
        streamer = CallbackStreamer(vlm.llm.tokenizer, stream) if stream is not None else None
        with self.model.running():
            out = vlm.generate_ids([ids], pixels, streamer=streamer, **self.settings.generate_kwargs())
        text = vlm.llm.tokenizer.decode(out[0], skip_special_tokens=True)
        user = self._next_user_turn(user_text)
        self.turns = self.turns[2 * dropped:] + [user, Turn("assistant", text.strip())]
        self.dropped_exchanges += dropped
        self.pending = []
        return text.strip()

    # ------------------------------------------------------------------ internals

    def _next_user_turn(self, text: str) -> Turn:
        if not text.strip() and not self.pending:
            raise ValueError("an empty message: type some text (or attach an image first)")
        return Turn("user", place_images(text, len(self.pending), "chat"), list(self.pending))

    def _overflow_message(self, error: SampleError, alone: bool) -> str:
        limit = self.model.renderer.max_length
        if alone:
            return (f"this message does not fit the model's max_length of {limit} tokens even without the earlier "
                    f"turns ({error}); shorten it, attach fewer images, or raise --max-length")
        return (f"the conversation no longer fits the model's max_length of {limit} tokens ({error}); /reset to "
                "start over, raise --max-length, or use --on-overflow drop_oldest")
