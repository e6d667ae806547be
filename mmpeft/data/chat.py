"""Chat rendering: a schema record -> ``input_ids`` + ``labels`` with only assistant tokens supervised.

With a chat template (the tokenizer's), the conversation is rendered once as text; each assistant turn's span is
found by rendering the prefix before it (with the generation prompt) and the prefix through it, and tokens inside
those spans are supervised (offsets from the fast tokenizer). The supervised span of a turn is its content plus the
template's end-of-turn marker, so the model learns to stop.

Without a template (base models), the documented fallback is LLaVA-v1 / Vicuna style::

    {bos}{system}\\n\\n USER: {user}\\n ASSISTANT: {assistant}{eos}\\n USER: ...

(no spaces around the ``\\n``; ``{system}\\n\\n`` only when a system turn or ``system_prompt`` exists), with
``{assistant}{eos}`` supervised. Plain ``text`` records are ``{bos}{text}{eos}``, all of it supervised.

Each image marker becomes ``num_image_tokens`` placeholder ids (labels IGNORE). Over-long samples are skipped
(``overlong="skip"``, the default) or truncated (``"truncate"``) at a point that never cuts an image's tokens.
Generation prompts (``render_prompt``) are bounded by the same ``max_length`` but never truncated: an over-long
prompt is a ``too_long`` SampleError, which evaluation counts as a skipped sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mmpeft.data.schema import IMAGE_MARKER, SampleError
from mmpeft.types import IGNORE_INDEX


@dataclass
class Rendered:
    """Token ids and labels of one sample (python lists, length T) and how many of its images survived."""

    input_ids: list[int]
    labels: list[int]
    num_images: int


class ChatRenderer:
    """Turns schema records into token ids and labels for one LLM.

    Args:
        tokenizer: a fast HF tokenizer (offsets are needed for template rendering).
        image_token: the LLM's image placeholder string (``LLMTower.image_token``).
        num_image_tokens: placeholder ids per image (``VisionLanguageModel.num_image_tokens``).
        max_length: maximum tokens per sample (``render``) and per generation prompt (``render_prompt``; an
            over-long prompt raises ``SampleError("too_long")``, never truncated).
        system_prompt: system turn added when a conversation has none (None: the template's default).
        use_chat_template: None uses the tokenizer's template when it has one; False forces the fallback.
        overlong: ``skip`` (counted as ``too_long``) or ``truncate`` (never through an image's tokens).
        chat_template: the Jinja template to render with instead of the tokenizer's (a model directory's saved
            template, ``mmpeft.data.input_format``); None: the tokenizer's.
    """

    def __init__(self, tokenizer: Any, image_token: str, num_image_tokens: int, max_length: int = 2048,
                 system_prompt: str | None = None, use_chat_template: bool | None = None,
                 overlong: Literal["skip", "truncate"] = "skip", chat_template: str | None = None):
        if overlong not in ("skip", "truncate"):
            raise ValueError(f"overlong={overlong!r}; use 'skip' or 'truncate'")
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"{image_token!r} is not a token of this tokenizer; build it with LLMTower, which adds it")
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.overlong = overlong
        self.system_prompt = system_prompt
        template = chat_template or getattr(tokenizer, "chat_template", None) or None
        if isinstance(template, dict):  # a tokenizer with named templates renders chats with "default"
            template = template.get("default")
        self.chat_template: str | None = template
        has_template = bool(self.chat_template)
        if use_chat_template and not has_template:
            raise ValueError("use_chat_template=True but the tokenizer has no chat_template")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        if self.use_chat_template and not getattr(tokenizer, "is_fast", False):
            raise ValueError("chat-template rendering needs a fast tokenizer (offset mapping)")

    # ------------------------------------------------------------------ public

    def render(self, record: dict[str, Any], where: str = "") -> Rendered:
        """A validated schema record -> ``Rendered``; raises ``SampleError`` (too_long) when it cannot fit."""
        if record.get("text") is not None:
            ids, labels = self._render_text(record["text"])
        else:
            ids, labels = self._render_conversation(self._messages(record["conversations"]), where)
        return self._fit(*self._expand_images(ids, labels), where)

    def render_prompt(self, conversations: list[dict[str, str]], where: str = "") -> list[int]:
        """Ids of a generation prompt: the turns up to the last user turn, then the assistant header.

        Trailing assistant turns (the reference answer of an eval record) are dropped. Images are expanded.

        ``max_length`` bounds the prompt (image placeholders included; the generated tokens come on top): a longer
        prompt raises ``SampleError("too_long")`` naming ``where``, whatever ``overlong`` says. A prompt is never
        truncated: cutting its end drops the question and the assistant header, cutting its start drops the
        system prompt or an image, and either way the model would answer a prompt it was never given. Callers
        count the error as a skipped sample (``mmpeft.eval.generate.predict``).
        """
        messages = self._messages(conversations)
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if self.use_chat_template:
            text = self._template(messages, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids, _ = self._fallback(messages + [{"role": "assistant", "content": None}])
        ids = self._expand_images(ids, [IGNORE_INDEX] * len(ids))[0]
        if len(ids) > self.max_length:
            raise SampleError("too_long", f"prompt of {len(ids)} tokens > max_length {self.max_length} (prompts are "
                              "never truncated; raise max_length, e.g. mmpeft eval --max-length)", where)
        return ids

    # ------------------------------------------------------------------ internals

    def _messages(self, conversations: list[dict[str, str]]) -> list[dict[str, str]]:
        messages = [{"role": t["role"], "content": t["content"].replace(IMAGE_MARKER, self.image_token)}
                    for t in conversations]
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _template(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _render_conversation(self, messages: list[dict[str, str]], where: str) -> tuple[list[int], list[int]]:
        if not self.use_chat_template:
            return self._fallback(messages)
        full = self._template(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._template(messages[:i], add_generation_prompt=True) if i else ""
            through = self._template(messages[: i + 1])
            if not (full.startswith(through) and through.startswith(before)):
                raise ValueError(
                    f"{where}: the chat template does not render conversations prefix-consistently, so assistant "
                    "turns cannot be located; use use_chat_template=False (the documented fallback)"
                )
            spans.append((len(before), len(through)))
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        labels = [
            tok if any(s <= start < e for s, e in spans) and end > start else IGNORE_INDEX
            for tok, (start, end) in zip(ids, enc["offset_mapping"])
        ]
        return ids, labels

    def _fallback(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids: list[int] = [tok.bos_token_id] if tok.bos_token_id is not None else []
        labels = [IGNORE_INDEX] * len(ids)

        def add(text: str, supervised: bool) -> None:
            piece = tok(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))

        for m in messages:
            if m["role"] == "system":
                add(f"{m['content']}\n\n", False)
            elif m["role"] == "user":
                add(f"USER: {m['content']}\n", False)
            else:
                add("ASSISTANT:", False)
                if m["content"] is None:  # generation prompt
                    break
                add(f" {m['content']}", True)
                ids.append(tok.eos_token_id)
                labels.append(tok.eos_token_id)
                add("\n", False)
        return ids, labels

    def _render_text(self, text: str) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        body = tok(text.replace(IMAGE_MARKER, self.image_token), add_special_tokens=False)["input_ids"]
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + body + [tok.eos_token_id]
        labels = [IGNORE_INDEX] * (len(ids) - len(body) - 1) + body + [tok.eos_token_id]
        return ids, labels

    def _expand_images(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        out_ids, out_labels = [], []
        for tok, lab in zip(ids, labels):
            if tok == self.image_token_id:
                out_ids.extend([tok] * self.num_image_tokens)
                out_labels.extend([IGNORE_INDEX] * self.num_image_tokens)
            else:
                out_ids.append(tok)
                out_labels.append(lab)
        return out_ids, out_labels

    def _fit(self, ids: list[int], labels: list[int], where: str) -> Rendered:
        num_images = ids.count(self.image_token_id) // self.num_image_tokens
        if len(ids) <= self.max_length:
            return Rendered(ids, labels, num_images)
        if self.overlong == "skip":
            raise SampleError("too_long", f"{len(ids)} tokens > max_length {self.max_length} (set overlong="
                              "'truncate' or a larger max_length)", where)
        cut = self.max_length
        while cut > 0 and ids[cut - 1] == self.image_token_id and ids[cut] == self.image_token_id:
            cut -= 1  # back to the start of the image run being cut through
        ids, labels = ids[:cut], labels[:cut]
        if all(lab == IGNORE_INDEX for lab in labels):
            raise SampleError("too_long", f"nothing supervised remains within max_length {self.max_length}", where)
        return Rendered(ids, labels, ids.count(self.image_token_id) // self.num_image_tokens)
