"""A prompts file to an output JSONL file: checked whole first, generated in batches, written atomically.

Every line is checked before anything is generated: its JSON (``prompts_file``), its prompt rendered by the
model's input format (``too_long`` over ``max_length``; prompts are never truncated) and its images decoded. A bad
line is refused with every bad line listed (number, reason) unless ``allow_partial``; then the good rows are
generated and the bad lines come back in the report. The output is written through ``mmpeft.atomic``: a finished
file or none. One output row per usable line, in file order::

    {"id": ..., "line": 3, "prediction": "...", "finish_reason": "stop" | "length", "prompt_tokens": 41,
     "generated_tokens": 12, "meta": ... (if the line had one),
     "settings": {"model", "format", "adapters", "max_new_tokens", "temperature", "top_p", "top_k", "seed",
                  "batch_size"}}

``finish_reason`` is ``stop`` when the model ended its reply (an end-of-sequence id), ``length`` when
``max_new_tokens`` cut it. Rows are batched in file order, left-padded; sampled output is reproducible for the same
file, seed, batch size and device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
from tqdm.auto import tqdm

from mmpeft.atomic import write_atomic
from mmpeft.data.schema import SampleError
from mmpeft.inference.images import load_image
from mmpeft.inference.model import InferenceModel
from mmpeft.inference.prompts_file import BadLine, PromptRow, read_prompts
from mmpeft.inference.settings import GenerationSettings


class PartialPrompts(ValueError):
    """Some lines of the prompts file cannot be used and a partial output was not allowed."""


@dataclass
class GenerationReport:
    """What ``generate_file`` did: rows written, bad lines (all of them, in file order), the output path."""

    output: Path
    written: int
    bad_lines: list[BadLine] = field(default_factory=list)

    def summary(self, input_path: str | Path = "") -> str:
        lines = [f"wrote {self.written} predictions to {self.output}"]
        if self.bad_lines:
            lines.append(f"skipped {len(self.bad_lines)} bad line(s) of {input_path}:")
            lines += [f"  {input_path}:{b.line}: [{b.reason}] {b.message}" for b in self.bad_lines]
        return "\n".join(lines)


def describe_bad_lines(path: str | Path, bad: list[BadLine], limit: int = 50) -> str:
    shown = [f"  {path}:{b.line}: [{b.reason}] {b.message}" for b in bad[:limit]]
    more = [f"  ... and {len(bad) - limit} more"] if len(bad) > limit else []
    return "\n".join(shown + more)


def check_rows(model: InferenceModel, rows: list[PromptRow], base_dir: Path
               ) -> tuple[list[tuple[PromptRow, list[int]]], list[BadLine]]:
    """Render each row's prompt and decode its images once (a bad image fails now, not hours in): the usable
    rows with their prompt ids, and the bad lines."""
    usable, bad = [], []
    for row in rows:
        try:  # the bad line is reported with its file and number: the messages need not repeat them
            ids = model.renderer.render_prompt(row.conversations)
            for reference in row.images:
                load_image(reference, model.vlm.vision.image_transform, base_dir)
        except SampleError as e:
            bad.append(BadLine(row.line, e.reason, str(e), row.id))
            continue
        usable.append((row, ids))
    return usable, bad


def generated_lengths(ids: torch.Tensor, eos_ids: set[int]) -> list[tuple[int, str]]:
    """``[B, L]`` generated ids -> per row (tokens up to and including the first EOS, finish reason)."""
    out = []
    for row in ids.tolist():
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        out.append((len(row), "length") if stop is None else (stop + 1, "stop"))
    return out


def eos_token_ids(model: InferenceModel) -> set[int]:
    configured = model.vlm.llm.model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return {i for i in [*ids, model.vlm.llm.tokenizer.eos_token_id] if i is not None}


def generate_file(model: InferenceModel, input_path: str | Path, output_path: str | Path,
                  settings: GenerationSettings | None = None, batch_size: int = 8, allow_partial: bool = False,
                  progress: bool = True) -> GenerationReport:
    """Generate a reply for every line of the prompts file ``input_path`` into ``output_path`` (module docstring).

    Raises:
        PartialPrompts: some lines are bad and ``allow_partial`` is False (nothing generated, nothing written).
        ValueError: no usable line at all, a bad ``batch_size``, or output and input are the same file.
        OSError: the input cannot be read, the output's directory does not exist.
    """
    settings = settings or GenerationSettings()
    input_path, output_path = Path(input_path), Path(output_path)
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: give at least 1 (--batch-size)")
    if output_path.resolve() == input_path.resolve():
        raise ValueError(f"--output {output_path} is the prompts file itself; write the predictions elsewhere")
    if not output_path.parent.is_dir():
        raise FileNotFoundError(f"--output {output_path}: directory {output_path.parent} does not exist")
    rows, bad = read_prompts(input_path)
    usable, bad_prompts = check_rows(model, rows, input_path.parent)
    bad = sorted(bad + bad_prompts, key=lambda b: b.line)
    if bad and not allow_partial:
        raise PartialPrompts(f"{len(bad)} line(s) of {input_path} cannot be used; fix them, or pass --allow-partial "
                             f"to generate the other {len(usable)}:\n{describe_bad_lines(input_path, bad)}")
    if not usable:
        raise ValueError(f"{input_path} has no usable prompt line" + (
            f":\n{describe_bad_lines(input_path, bad)}" if bad else " (it is empty)"))
    shared = {**model.describe(), **settings.to_dict(), "batch_size": batch_size}
    eos = eos_token_ids(model)
    tokenizer = model.vlm.llm.tokenizer

    def write(f: IO[bytes]) -> None:
        settings.seed_generators()
        bar = tqdm(total=len(usable), desc="generate", unit="prompt", disable=not progress)
        for start in range(0, len(usable), batch_size):
            batch = usable[start:start + batch_size]
            images = [load_image(ref, model.vlm.vision.image_transform, input_path.parent, f"line {row.line}")
                      for row, _ in batch for ref in row.images]
            with model.running():
                ids = model.vlm.generate_ids([prompt for _, prompt in batch],
                                             torch.stack(images) if images else None,
                                             **settings.generate_kwargs())
            for (row, prompt), out, (length, reason) in zip(batch, ids, generated_lengths(ids, eos)):
                record = {"id": row.id, "line": row.line,
                          "prediction": tokenizer.decode(out[:length], skip_special_tokens=True).strip(),
                          "finish_reason": reason, "prompt_tokens": len(prompt), "generated_tokens": length}
                if row.meta is not None:
                    record["meta"] = row.meta
                record["settings"] = shared
                f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            bar.update(len(batch))
        bar.close()

    write_atomic(output_path, write)
    return GenerationReport(output_path, len(usable), bad)
