"""Text-only forgetting probes, run on the adapted model and on its base (the same weights, adapters off).

- ``PerplexityProbe``: held-out perplexity over fixed-length windows of a text corpus.
- ``MultipleChoiceProbe``: accuracy by summed continuation log-likelihood, ``acc`` and length-normalised
  ``acc_norm`` exactly as lm-evaluation-harness defines them (context ``query``, continuation
  ``" " + choice``, trailing context spaces moved to the continuation, the pair tokenised whole then split;
  ``acc_norm`` divides by the choice's character length).
- ``ExactMatchProbe``: greedy generation, first non-empty line, normalised exact match against any reference answer (and
  ``contains``: a reference appears as whole words in that line, for chat models that answer in sentences).
- ``ChatStyleProbe``: greedy chat answers to open prompts: mean length, and (in ``compare``) how close each answer
  stays to the base model's answer to the same prompt (``rougeL_to_base``: pycocoevalcap's ROUGE-L F-measure of
  the lower-cased, space-split answers, 1.0 = the base's words in the base's order).

Prompts of the generation probes (``GenerationProbe``): each prompt is one user turn rendered in the model's input
format, ``renderer_for(vlm)`` (``mmpeft.data.input_format``): the chat template or USER/ASSISTANT fallback, the
template text and the system prompt saved in the model directory (during training: the data config's, set by
``VLMModule.setup``), so a run trained with ``system_prompt: ""`` is probed with that, not with the tokenizer's
default. Only a model without a saved format (built in Python, or a directory older than saved formats) falls back to
``ChatRenderer``'s defaults: the tokenizer's own template with its default system prompt (the USER/ASSISTANT fallback
if it has none), with a warning. ``use_chat_template=False`` is the explicit plain-text choice: the tokenizer's
encoding of the bare prompt (BOS + prompt). ``compare`` renders the prompt ids once per probe and feeds the same ids
to the adapted and the base pass, so adapters are the only difference. The lm-eval bridge
(``mmpeft.eval.lm_eval_bridge``) is different by design: lm-eval tasks bring their own prompt formats and never see
the model's.

``compare(vlm, probes)`` reports each three ways: adapted, base, and adapted - base, with 95% intervals over the
probe's items (perplexity: its windows; paired for the difference, see ``mmpeft.eval.probe_statistics``). The
probes go through ``VisionLanguageModel.forward`` / ``generate``, so a soft prompt counts as part of the adapted model.

Probe files are JSONL; each line is checked and a bad one is reported with its file, line and id. A ``path`` is the
user's file, else one of the packaged probe sets (``v1/prose.txt``; ``mmpeft.eval.probe_files``). In an evaluation,
the probes run as one task (``mmpeft.eval.tasks.TextProbeTask``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmpeft.adapters.inject import disabled_adapters
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.collate import Collator
from mmpeft.data.input_format import renderer_for
from mmpeft.data.schema import IMAGE_MARKER, SampleError
from mmpeft.eval.probe_files import read_corpus, read_jsonl
from mmpeft.eval.probe_statistics import probe_intervals, rouge_l_to_base
from mmpeft.types import IGNORE_INDEX
from mmpeft.vlm import VisionLanguageModel


@torch.no_grad()
def sequence_logprobs(vlm: VisionLanguageModel, sequences: Sequence[tuple[list[int], int]], batch_size: int = 16,
                      ) -> list[tuple[float, int]]:
    """Summed log-probability of the last ``n`` (< ``len(ids)``) tokens of each ``(ids, n)`` given the rest:
    ``(logprob, n)``. Each chunk is a text-only ``Batch`` from the training collator, ``labels`` the scored tokens."""
    device = vlm.llm.model.device
    collate = Collator(vlm.llm.tokenizer.pad_token_id)
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        if any(n >= len(ids) for ids, n in chunk):  # token 0 has no prediction: it would count but not score
            raise ValueError("sequence_logprobs scores at most len(ids) - 1 final tokens; put context before them")
        batch = collate([{"input_ids": torch.tensor(ids), "pixel_values": None,
                          "labels": torch.tensor([IGNORE_INDEX] * (len(ids) - n) + ids[len(ids) - n :])}
                         for ids, n in chunk])
        result = vlm(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        hidden = result.hidden_states  # [B, T, D], aligned with the batch
        targets = batch["labels"].to(device)[:, 1:]
        selected = targets != IGNORE_INDEX
        logp = torch.log_softmax(vlm.llm.head_logits(hidden[:, :-1][selected]).float(), dim=-1)
        token_logp = logp.gather(1, targets[selected].unsqueeze(1)).squeeze(1)
        per_row = torch.zeros(len(chunk), device=device).index_add_(
            0, selected.nonzero()[:, 0], token_logp)
        out += [(float(v), n) for v, (_, n) in zip(per_row.tolist(), chunk)]
    return out


class TextProbe:
    """Base of text probes: ``name`` for reports, ``kind``, and ``run(vlm) -> {metric: value}``."""

    name: str
    kind: str

    def run(self, vlm: VisionLanguageModel) -> dict[str, Any]:
        raise NotImplementedError


class PerplexityProbe(TextProbe):
    """Perplexity of a text corpus in non-overlapping ``window``-token windows (texts joined by EOS).

    Args:
        name: the probe's name in reports.
        path: JSONL with ``{"text": ...}`` lines (or a .txt file: one document per blank-line-separated block).
        window: tokens per window; the first token of each window is context only.
        max_tokens: use at most this many tokens of the corpus.
    """

    kind = "perplexity"

    def __init__(self, name: str, path: str, window: int = 512, max_tokens: int | None = None,
                 batch_size: int = 8):
        self.name, self.path, self.window, self.max_tokens, self.batch_size = name, path, window, max_tokens, batch_size
        self.texts = read_corpus(path)

    def run(self, vlm: VisionLanguageModel) -> dict[str, float]:
        tok = vlm.llm.tokenizer
        stream: list[int] = []
        for text in self.texts:
            stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if self.max_tokens:
            stream = stream[: self.max_tokens]
        windows = [(stream[i : i + self.window], len(stream[i : i + self.window]) - 1)
                   for i in range(0, len(stream), self.window) if len(stream[i : i + self.window]) > 1]
        scores = sequence_logprobs(vlm, windows, self.batch_size)
        nll = -sum(s for s, _ in scores)
        tokens = sum(n for _, n in scores)
        return {"perplexity": math.exp(nll / tokens), "nll_per_token": nll / tokens, "tokens": tokens,
                "windows": [[-s, n] for s, n in scores]}  # per-window (NLL, tokens): what the intervals resample


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's causal-LM pair encoding: whole string tokenised, split at the context length."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    return context_ids, whole[len(context_ids) :]


class MultipleChoiceProbe(TextProbe):
    """Multiple choice by summed log-likelihood of ``delimiter + choice`` after ``query``.

    Args:
        name: the probe's name in reports.
        path: JSONL with ``{"id", "query", "choices": [str], "gold": int}`` lines.
        delimiter: between query and choice (lm-eval's ``target_delimiter``).
        limit: use only the first ``limit`` items (smoke runs).
    """

    kind = "multiple_choice"

    def __init__(self, name: str, path: str, delimiter: str = " ", batch_size: int = 16, limit: int | None = None):
        self.name, self.path, self.delimiter, self.batch_size = name, path, delimiter, batch_size
        self.items = read_jsonl(path, {"query": str, "choices": list, "gold": int})[:limit]
        for i, item in enumerate(self.items):
            if not 0 <= item["gold"] < len(item["choices"]):
                raise ValueError(f"{path}: item {item.get('id', i)!r} has gold={item['gold']} outside its "
                                 f"{len(item['choices'])} choices")

    def run(self, vlm: VisionLanguageModel) -> dict[str, float]:
        tok = vlm.llm.tokenizer
        sequences, owners = [], []
        for i, item in enumerate(self.items):
            for choice in item["choices"]:
                ctx, cont = encode_pair(tok, item["query"], self.delimiter + choice)
                if not ctx:
                    ctx = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
                sequences.append((ctx + cont, len(cont)))
                owners.append(i)
        scores = sequence_logprobs(vlm, sequences, self.batch_size)
        correct, correct_norm = [], []
        k = 0
        for item in self.items:
            lls = [s for s, _ in scores[k : k + len(item["choices"])]]
            k += len(item["choices"])
            norm = [ll / len(c) for ll, c in zip(lls, item["choices"])]
            correct.append(int(max(range(len(lls)), key=lls.__getitem__) == item["gold"]))
            correct_norm.append(int(max(range(len(norm)), key=norm.__getitem__) == item["gold"]))
        n = len(self.items)
        return {"acc": sum(correct) / n, "acc_norm": sum(correct_norm) / n, "n": n, "correct": correct,
                "correct_norm": correct_norm}


def user_prompt_ids(vlm: VisionLanguageModel, prompts: Sequence[str], renderer: ChatRenderer | None,
                    ) -> list[list[int]]:
    """Prompts as generation-ready ids.

    Args:
        renderer: each prompt becomes one user turn in this renderer's format (system prompt, template or
            fallback, then the assistant header; ``ChatRenderer.render_prompt``). None: plain text, the tokenizer's
            encoding of the bare prompt (with BOS where the tokenizer adds one).
    """
    if renderer is None:
        return [vlm.llm.tokenizer(p)["input_ids"] for p in prompts]
    return [renderer.render_prompt([{"role": "user", "content": p}]) for p in prompts]


def normalize_text(text: str) -> str:
    """Lower-case, strip punctuation at the ends and articles-free spacing, for exact match."""
    text = text.strip().lower()
    text = text.strip(string.punctuation + " ")
    return re.sub(r"\s+", " ", text)


class GenerationProbe(TextProbe):
    """Base of probes that generate greedy answers to the ``prompt`` of each item (``self.items``).

    Prompts are rendered in the model's input format unless ``use_chat_template`` is False (module docstring).
    """

    items: list[dict[str, Any]]
    use_chat_template: bool
    max_new_tokens: int
    batch_size: int

    def _check_text_only(self) -> None:
        for i, item in enumerate(self.items):
            if IMAGE_MARKER in item["prompt"]:
                raise ValueError(f"{self.path}: item {item.get('id', i)!r} has {IMAGE_MARKER} in its prompt; text "
                                 "probes run without images: remove the marker")

    def prompt_ids(self, vlm: VisionLanguageModel, renderer: ChatRenderer | None = None) -> list[list[int]]:
        """The items' prompts as ids: one user turn in ``renderer``'s format (None: ``renderer_for(vlm)``, the
        model's saved input format), or plain text when ``use_chat_template`` is False."""
        if self.use_chat_template and renderer is None:
            renderer = renderer_for(vlm)
        ids = []
        for i, item in enumerate(self.items):
            try:
                ids += user_prompt_ids(vlm, [item["prompt"]], renderer if self.use_chat_template else None)
            except SampleError as e:  # a probe compares every item: one that cannot be asked is an error, not a skip
                raise ValueError(f"probe {self.name!r}: {self.path} item {item.get('id', i)!r}: {e}") from None
        return ids

    @staticmethod
    def prompts_digest(prompt_ids: list[list[int]]) -> str:
        """sha256 of the prompt ids, recorded in results as ``prompts_sha256``: ``compare`` reuses a cached base
        result only if it saw the same prompts (another run's format, e.g. its system prompt, gives others)."""
        return hashlib.sha256(json.dumps(prompt_ids).encode()).hexdigest()

    def generate(self, vlm: VisionLanguageModel, prompt_ids: list[list[int]]) -> list[str]:
        """Greedy answers (decoded, special tokens dropped), one per prompt, in ``batch_size`` batches."""
        if len(prompt_ids) != len(self.items):
            raise ValueError(f"probe {self.name}: {len(prompt_ids)} prompts for {len(self.items)} items")
        texts: list[str] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            ids = vlm.generate_ids(prompt_ids[start : start + self.batch_size], max_new_tokens=self.max_new_tokens)
            texts += vlm.llm.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts


class ExactMatchProbe(GenerationProbe):
    """Greedy generation compared with reference answers (first line, normalised).

    Args:
        name: the probe's name in reports.
        path: JSONL with ``{"id", "prompt", "answers": [str]}`` lines.
        use_chat_template: True: the prompt as a user turn in the model's input format (its saved chat template
            or USER/ASSISTANT fallback and system prompt; the tokenizer's defaults only for a model without a
            saved format). False: the bare prompt as plain text.
        max_new_tokens: generation budget.
        limit: use only the first ``limit`` items (smoke runs).
    """

    kind = "exact_match"

    def __init__(self, name: str, path: str, use_chat_template: bool = True, max_new_tokens: int = 16,
                 batch_size: int = 16, limit: int | None = None):
        self.name, self.path, self.use_chat_template = name, path, use_chat_template
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.items = read_jsonl(path, {"prompt": str, "answers": list})[:limit]
        self._check_text_only()

    def run(self, vlm: VisionLanguageModel, prompt_ids: list[list[int]] | None = None) -> dict[str, Any]:
        """Args: prompt_ids: the rendered prompts (``compare`` passes the same ones to adapted and base);
        None: ``self.prompt_ids(vlm)``."""
        prompt_ids = self.prompt_ids(vlm) if prompt_ids is None else prompt_ids
        texts = self.generate(vlm, prompt_ids)
        hits = contains = 0
        outputs = []
        for item, text in zip(self.items, texts, strict=True):
            answer = next((line.strip() for line in text.split("\n") if line.strip()), "")
            targets = {normalize_text(a) for a in item["answers"]}
            hit = normalize_text(answer) in targets
            words = f" {re.sub(r'[^a-z0-9 ]', ' ', normalize_text(answer))} "
            found = any(f" {t} " in words for t in targets)
            hits += hit
            contains += found
            outputs.append({"id": item.get("id"), "output": answer, "correct": bool(hit), "contains": bool(found)})
        n = len(self.items)
        return {"exact_match": hits / n, "contains": contains / n, "n": n, "outputs": outputs,
                "prompts_sha256": self.prompts_digest(prompt_ids)}


class ChatStyleProbe(GenerationProbe):
    """Greedy chat answers to open prompts: how long they are, and (in ``compare``) how close they stay to the base's.

    Fine-tuning on short VQA answers tends to make chat answers terse; this shows it.

    Args:
        name: the probe's name in reports.
        path: JSONL with ``{"id", "prompt"}`` lines.
        max_new_tokens: generation budget per answer.
        limit: use only the first ``limit`` prompts (smoke runs).
        use_chat_template: as ``ExactMatchProbe``'s (True: the model's input format; False: plain text).
    """

    kind = "chat_style"

    def __init__(self, name: str, path: str, max_new_tokens: int = 24, batch_size: int = 16,
                 limit: int | None = None, use_chat_template: bool = True):
        self.name, self.path, self.max_new_tokens, self.batch_size = name, path, max_new_tokens, batch_size
        self.use_chat_template = use_chat_template
        self.items = read_jsonl(path, {"prompt": str})[:limit]
        self._check_text_only()

    def run(self, vlm: VisionLanguageModel, prompt_ids: list[list[int]] | None = None) -> dict[str, Any]:
        """Args: prompt_ids: as ``ExactMatchProbe.run``'s."""
        prompt_ids = self.prompt_ids(vlm) if prompt_ids is None else prompt_ids
        outputs = [t.strip() for t in self.generate(vlm, prompt_ids)]
        return {"mean_chars": sum(map(len, outputs)) / len(outputs), "n": len(outputs),
                "outputs": [{"id": it.get("id"), "output": o} for it, o in zip(self.items, outputs)],
                "prompts_sha256": self.prompts_digest(prompt_ids)}


def compare(vlm: VisionLanguageModel, probes: Sequence[Any], base_cache: dict[str, Any] | None = None,
            progress: bool = True, renderer: ChatRenderer | None = None) -> dict[str, dict[str, Any]]:
    """Each probe on the adapted model and on its base: ``{name: {"kind", "adapted", "base", "delta",
    "interval_95"}}``.

    Generation probes get their prompt ids rendered once (module docstring) and the same ids in both passes.

    Args:
        base_cache: results of the base by probe name, reused when given (the base never changes during
            training) and filled otherwise; a generation probe's cached result is reused only for the same prompt
            ids (``prompts_sha256``), else the base runs again and replaces it.
        renderer: the format generation probes render prompts in; None: ``renderer_for(vlm)``, the model's saved
            input format (a caller with explicit format overrides, like ``mmpeft eval --system-prompt``, passes
            its renderer).
    """
    was_training = vlm.training
    vlm.eval()
    results: dict[str, dict[str, Any]] = {}
    if renderer is None and any(isinstance(p, GenerationProbe) and p.use_chat_template for p in probes):
        renderer = renderer_for(vlm)  # once: warns once for a model without a saved format
    try:
        for probe in tqdm(probes, desc="text probes", disable=not progress):
            if isinstance(probe, GenerationProbe):
                prompts = probe.prompt_ids(vlm, renderer)  # adapters do not touch rendering: one set for both
                adapted = probe.run(vlm, prompts)
            else:
                adapted = probe.run(vlm)
            cached = base_cache.get(probe.name) if base_cache is not None else None
            if cached is not None and cached.get("prompts_sha256") == adapted.get("prompts_sha256"):
                base = cached  # same probe, same prompt ids (generation probes): the base's answers are these
            else:
                with disabled_adapters(vlm):
                    base = probe.run(vlm, prompts) if isinstance(probe, GenerationProbe) else probe.run(vlm)
                if base_cache is not None:
                    base_cache[probe.name] = base
            delta = {k: adapted[k] - base[k] for k in adapted
                     if isinstance(adapted[k], int | float) and k not in ("n", "tokens")}
            if "outputs" in adapted:  # generated text: how much of it is still the base model's
                adapted = {**adapted, "rougeL_to_base": float(np.mean(rouge_l_to_base(adapted, base)))}
            results[probe.name] = {"kind": probe.kind, "adapted": adapted, "base": base, "delta": delta,
                                   "interval_95": probe_intervals(adapted, base)}
    finally:
        vlm.train(was_training)
    return results
