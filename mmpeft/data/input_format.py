"""The input format a model was trained with: saved in its model directory, used by everything that prompts it.

Evaluation, generation, probes and export must render prompts exactly as training did; a different system prompt
or template silently costs accuracy. So the format is stored with the model (``mmpeft_config.json``, key
``input_format``, in checkpoints and exports alike), and ``renderer_for(vlm)`` is the one place that turns it back
into a ``ChatRenderer``. Fields (``InputFormat``)::

    use_chat_template   true: the chat template below; false: the USER/ASSISTANT fallback (mmpeft.data.chat)
    chat_template       the Jinja template string itself (so a changed tokenizer file cannot change prompts);
                        rendered by transformers in its sandboxed Jinja environment, never run as Python
    system_prompt       system turn added when a conversation has none (null: none added, the template decides)
    image_token         the LLM's placeholder string (LLMTower.image_token)
    num_image_tokens    placeholder ids per image (VisionLanguageModel.num_image_tokens)
    image_placement     "inline": each <image> marker of a user turn becomes num_image_tokens placeholder ids in
                        place, images in reading order (the only placement mmpeft has)
    max_length          maximum tokens per sample
    overlong            "skip" or "truncate" (never through an image's tokens)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mmpeft.data.chat import ChatRenderer

if TYPE_CHECKING:
    from mmpeft.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

PLACEMENTS = ("inline",)
OVERLONG = ("skip", "truncate")


@dataclass(frozen=True)
class InputFormat:
    """Everything that defines how a conversation becomes the model's input ids (fields: module docstring)."""

    use_chat_template: bool
    chat_template: str | None
    system_prompt: str | None
    image_token: str
    num_image_tokens: int
    image_placement: str = "inline"
    max_length: int = 2048
    overlong: str = "skip"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "input_format") -> InputFormat:
        """Read a saved format strictly: unknown or missing fields and wrong types raise ValueError naming
        ``where`` (e.g. ``.../mmpeft_config.json: key input_format``)."""
        types: dict[str, Any] = {"use_chat_template": bool, "chat_template": (str, type(None)),
                                 "system_prompt": (str, type(None)), "image_token": str, "num_image_tokens": int,
                                 "image_placement": str, "max_length": int, "overlong": str}
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object with fields {list(types)}, got {data!r}")
        unknown = sorted(set(data) - set(types))
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if unknown or missing:
            raise ValueError(f"{where}: unknown fields {unknown}, missing fields {missing}; fields are {list(types)}")
        for name, value in data.items():
            if not isinstance(value, types[name]) or (types[name] is int and isinstance(value, bool)):
                raise ValueError(f"{where}.{name} = {value!r} has the wrong type")
        fmt = cls(**data)
        fmt.check(where)
        return fmt

    def check(self, where: str = "input_format") -> None:
        if self.image_placement not in PLACEMENTS:
            raise ValueError(f"{where}.image_placement = {self.image_placement!r}; this mmpeft knows {PLACEMENTS}")
        if self.overlong not in OVERLONG:
            raise ValueError(f"{where}.overlong = {self.overlong!r}; use one of {OVERLONG}")
        if self.use_chat_template and not self.chat_template:
            raise ValueError(f"{where}: use_chat_template is true but chat_template is empty")
        if self.num_image_tokens < 1 or self.max_length < 1:
            raise ValueError(f"{where}: num_image_tokens and max_length must be >= 1")


def input_format_of(renderer: ChatRenderer) -> InputFormat:
    """The format a renderer applies (what training saves with its checkpoints)."""
    return InputFormat(
        use_chat_template=bool(renderer.use_chat_template),
        chat_template=renderer.chat_template if renderer.use_chat_template else None,
        system_prompt=renderer.system_prompt, image_token=renderer.image_token,
        num_image_tokens=renderer.num_image_tokens, image_placement="inline", max_length=renderer.max_length,
        overlong=renderer.overlong,
    )


def default_input_format(vlm: VisionLanguageModel) -> InputFormat:
    """``ChatRenderer``'s defaults for this model (tokenizer's template if any, no system prompt, 2048 tokens):
    what a model built in Python without a data config is saved with."""
    return input_format_of(ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens))


def renderer_for(vlm: VisionLanguageModel, **overrides: Any) -> ChatRenderer:
    """The ChatRenderer of a loaded model directory: ``vlm.input_format`` (set by ``load_pretrained``), with
    explicit overrides (``system_prompt=...``, ``max_length=...``, ``overlong=...``, ``use_chat_template=...``,
    ``chat_template=...``; e.g. from CLI flags).

    A model without a saved format (built in Python, or loaded from a directory written before formats were
    saved) uses ``default_input_format`` and logs a warning.

    Raises:
        ValueError: an unknown override, or a saved format whose image placeholder geometry disagrees with the
            model (a corrupted or hand-edited directory).
    """
    fmt = vlm.input_format
    if fmt is None:
        log.warning("the model has no saved input format (mmpeft_config.json without input_format, or built in "
                    "Python): prompts use ChatRenderer's defaults, which may differ from how it was trained")
        fmt = default_input_format(vlm)
    fixed = {"image_token", "num_image_tokens", "image_placement"}
    bad = sorted(set(overrides) - {f.name for f in dataclasses.fields(InputFormat)} | (set(overrides) & fixed))
    if bad:
        raise ValueError(f"renderer_for: cannot override {bad}; overridable: use_chat_template, chat_template, "
                         "system_prompt, max_length, overlong (the image geometry is the model's)")
    if overrides.get("use_chat_template") and not (overrides.get("chat_template") or fmt.chat_template):
        overrides["chat_template"] = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, 1).chat_template
    fmt = dataclasses.replace(fmt, **overrides)
    fmt.check("input format")
    if (fmt.image_token, fmt.num_image_tokens) != (vlm.llm.image_token, vlm.num_image_tokens):
        raise ValueError(f"the saved input format places {fmt.num_image_tokens} x {fmt.image_token!r} per image, but "
                         f"the model has {vlm.num_image_tokens} x {vlm.llm.image_token!r}; the model directory's "
                         "mmpeft_config.json is inconsistent (input_format vs vlm)")
    return ChatRenderer(vlm.llm.tokenizer, fmt.image_token, fmt.num_image_tokens, max_length=fmt.max_length,
                        system_prompt=fmt.system_prompt, use_chat_template=fmt.use_chat_template,
                        overlong=fmt.overlong, chat_template=fmt.chat_template)


def input_format_from_data_config(vlm: VisionLanguageModel, data: dict[str, Any]) -> InputFormat:
    """The format a run's ``data`` config section implies (``VLDataModule``'s options and defaults): for model
    directories written before the format was saved, whose run directory still has its ``config.yaml``."""
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                            max_length=data.get("max_length") or 2048, system_prompt=data.get("system_prompt"),
                            use_chat_template=data.get("use_chat_template"), overlong=data.get("overlong") or "skip")
    return input_format_of(renderer)
