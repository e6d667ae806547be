"""``mmpeft eval``: score one checkpoint on evaluation tasks (VQA, captions, text probes, vision drift, lm-eval, or
any ``mmpeft.eval.task.EvalTask``), run by the shared loop ``mmpeft.eval.loop.evaluate``.

Tasks come from eval config files (``--config eval/demo.yaml``: ``mmpeft.eval.config``) and from the task flags
(``--vqa``, ``--captions``, ``--ppl``, ``--mc``, ``--em``, ``--vision``, ``--lm-eval-tasks``), which build the same task
objects; both may be given (the files' tasks first). Writes ``<out>.json`` (all scores) and
``<out>.predictions.jsonl`` (every generated answer with its id and task).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.checkpoint import add_loading_flags, load_pretrained, loading_options
from mmpeft.data.input_format import input_format_from_data_config, renderer_for
from mmpeft.data.integrity import PartialData
from mmpeft.eval.captioning import TOKENIZERS
from mmpeft.eval.config import load_eval_config
from mmpeft.eval.loop import check_tasks, evaluate
from mmpeft.eval.summary import summary
from mmpeft.eval.task import EvalContext, EvalTask
from mmpeft.eval.tasks import CaptionTask, LmEvalTask, TextProbeTask, VisionDriftTask, VQATask
from mmpeft.eval.text_probes import ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe

log = logging.getLogger(__name__)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(EvalContext)
            if f.name in ("batch_size", "max_new_tokens", "limit", "allow_partial")}
"""Settings when neither a flag nor an eval config sets them: ``EvalContext``'s defaults."""


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The data settings of the run the checkpoint came from (``<run>/config.yaml``), if it is in a run dir.

    Only for model directories written before ``input_format`` was saved in them: the saved format wins.
    """
    for parent in (checkpoint.parent.parent, checkpoint.parent):
        config = parent / "config.yaml"
        if config.is_file():
            return (yaml.safe_load(config.read_text()) or {}).get("data", {}) or {}
    return {}


def _named(values: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).stem, value
        if not path:
            raise SystemExit(f"{flag} {value!r}: give NAME=PATH or PATH")
        out.append((name, path))
    return out


def flag_tasks(args: argparse.Namespace) -> list[EvalTask]:
    """The tasks the task flags ask for, in the order vqa, captions, text probes, vision, lm-eval."""
    tasks: list[EvalTask] = []
    if args.vqa:
        tasks.append(VQATask(args.vqa))
    if args.captions:
        tasks.append(CaptionTask(args.captions, tokenizer=args.caption_tokenizer or "ptb"))
    probes = ([PerplexityProbe(n, p) for n, p in _named(args.ppl, "--ppl")]
              + [MultipleChoiceProbe(n, p) for n, p in _named(args.mc, "--mc")]
              + [ExactMatchProbe(n, p) for n, p in _named(args.em, "--em")])
    if probes:
        tasks.append(TextProbeTask(probes))
    if args.vision:
        tasks.append(VisionDriftTask(args.vision, label_field=args.vision_label_field))
    if args.lm_eval_tasks:
        tasks.append(LmEvalTask(args.lm_eval_tasks, include_path=args.lm_eval_include))
    return tasks


def with_caption_tokenizer(tasks: list[EvalTask], tokenizer: str | None) -> list[EvalTask]:
    """``tasks`` with every caption task set to ``tokenizer`` (``--caption-tokenizer``), those of eval configs
    included: a machine without java scores a packaged config's captions in Python. None leaves them as they are."""
    if tokenizer:
        for task in tasks:
            if isinstance(task, CaptionTask):
                task.tokenizer = tokenizer
    return tasks


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint or export directory")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="eval config: tasks as class_path/init_args, optional settings (your file, or a packaged one "
                        "such as eval/demo.yaml); repeatable, tasks add up")
    p.add_argument("--vqa", nargs="+", help="VQA shards (directory, glob or brace pattern)")
    p.add_argument("--captions", nargs="+", help="caption shards")
    p.add_argument("--caption-tokenizer", choices=TOKENIZERS, default=None,
                   help="the tokenizer of every caption task, --captions and those of --config files alike (given, it "
                        "replaces their tokenizer: setting; default: theirs, ptb for --captions). ptb: pycocoevalcap's "
                        "Java PTBTokenizer (needs java); python: the pure-Python tokenizer that gives the same tokens "
                        "(METEOR still needs java, else reported as null)")
    p.add_argument("--ppl", nargs="+", default=[], help="perplexity probe files, NAME=PATH or PATH (JSONL/.txt)")
    p.add_argument("--mc", nargs="+", default=[], help="multiple-choice probe files (JSONL)")
    p.add_argument("--em", nargs="+", default=[], help="exact-match generation probe files (JSONL)")
    p.add_argument("--vision", nargs="+", help="image shards for the vision-side drift probe")
    p.add_argument("--vision-label-field", help="eval field holding a class label, for the linear probe")
    p.add_argument("--lm-eval-tasks", nargs="+", help="lm-evaluation-harness tasks (needs lm-eval)")
    p.add_argument("--lm-eval-include", help="directory of local lm-eval task YAMLs")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']} (or the eval config's)")
    p.add_argument("--max-new-tokens", type=int, help="answer budget of tasks that set none; default "
                                                      f"{DEFAULTS['max_new_tokens']} (or the eval config's)")
    p.add_argument("--max-length", type=int, help="override the model directory's saved max_length")
    p.add_argument("--system-prompt", help="override the model directory's saved system prompt")
    p.add_argument("--limit", type=int, help="evaluate at most this many samples per task")
    p.add_argument("--allow-partial", action="store_true", default=None,
                   help="score even if shard rows were lost or samples skipped (refused otherwise); the scores "
                        "JSON and summary record how many were missing and why")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="output path without extension: writes OUT.json and OUT.predictions.jsonl "
                                 "(default: <run>/eval/<checkpoint name> for a run's checkpoint, else "
                                 "eval/<name> beside the model directory; never inside it)")
    add_loading_flags(p)
    return p


def main(argv: list[str]) -> dict[str, Any]:
    args = parser().parse_args(argv)
    checkpoint = Path(args.checkpoint)
    out = output_path(checkpoint, args.out)  # a bad --out fails before the model loads
    config = load_eval_config(args.config)
    tasks = with_caption_tokenizer(config.tasks + flag_tasks(args), args.caption_tokenizer)
    if not tasks:
        raise SystemExit("mmpeft eval: nothing to evaluate; give an eval config (--config eval/demo.yaml or your "
                         "own) or task flags (--vqa, --captions, --ppl, --mc, --em, --vision, --lm-eval-tasks)")
    check_tasks(tasks)
    for task in tasks:
        task.check()  # a missing tool fails before the model loads (the loop checks again before running)
    flags = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    settings = {**DEFAULTS, **config.settings, **flags}
    vlm = load_pretrained(checkpoint, **loading_options(args)).to(args.device)
    if vlm.input_format is None:  # written before the format was saved: the run's config.yaml, if there is one
        vlm.input_format = input_format_from_data_config(vlm, _run_config(checkpoint))
    # prompts exactly as trained (mmpeft_config.json input_format), with explicit overrides only
    renderer = renderer_for(vlm, **{k: v for k, v in (("max_length", args.max_length),
                                                      ("system_prompt", args.system_prompt)) if v is not None})
    try:
        scores, predictions = evaluate(vlm, tasks, renderer=renderer, allow_hint="--allow-partial", **settings)
    except PartialData as e:
        raise SystemExit(f"mmpeft eval: {e}") from None
    meta = json.loads((checkpoint / "mmpeft_config.json").read_text()).get("extra", {})
    scores = {"checkpoint": str(checkpoint), "step": meta.get("global_step"), **scores}
    scores_file, predictions_file = output_files(out)
    write_text_atomic(predictions_file, "".join(json.dumps(p, default=str) + "\n" for p in predictions))
    write_json_atomic(scores_file, scores, default=str)  # last: a scores file means its predictions are whole
    print(summary(scores, tasks))
    print(f"wrote {scores_file} and {predictions_file}")
    return scores


def output_path(checkpoint: Path, out: str | None) -> Path:
    """Where ``mmpeft eval`` writes, without extension: ``--out`` as given, else ``<run>/eval/<checkpoint>`` for a
    run's checkpoint (``<run>/checkpoints/last.ckpt`` -> ``<run>/eval/last``) and ``eval/<name>`` beside any other
    model directory (``x/export`` -> ``x/eval/export``). Never inside the model directory: it is data, and what is
    written there would travel with it."""
    model = checkpoint.resolve()
    name = model.name.removesuffix(".ckpt")
    if out is not None:
        path = Path(out)
        if path.name in ("", ".", ".."):
            raise SystemExit(f"mmpeft eval: --out {out!r} names no file; give a path without extension, e.g. "
                             "eval/lr_0.5")
        path = path.with_name(path.name.removesuffix(".json"))  # --out scores.json means scores.json
    elif model.parent.name == "checkpoints":
        path = model.parent.parent / "eval" / name
    else:
        path = model.parent / "eval" / name
    if path.resolve().is_relative_to(model):
        raise SystemExit(f"mmpeft eval: --out {out} is inside the model directory {checkpoint}; write the scores "
                         "elsewhere (the default is eval/ beside it)")
    return path


def output_files(out: Path) -> tuple[Path, Path]:
    """``(<out>.json, <out>.predictions.jsonl)``: the name is extended, never cut at a dot (``eval/lr_0.5`` ->
    ``eval/lr_0.5.json``, not ``eval/lr_0.json``); the directory is created."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(out.name + ".json"), out.with_name(out.name + ".predictions.jsonl")
