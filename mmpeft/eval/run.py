"""``mmpeft eval``: score one checkpoint on VQA / caption shards, text probes and the vision-side probe.

Writes ``<out>.json`` (all scores) and ``<out>.predictions.jsonl`` (every generated answer with its id).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from mmpeft.checkpoint import load_pretrained
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.datamodule import resolve_shards
from mmpeft.data.skips import SkipLog
from mmpeft.eval.captioning import caption_metrics
from mmpeft.eval.generate import predict, read_eval_records
from mmpeft.eval.text_probes import ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe, compare
from mmpeft.eval.vision_probe import vision_drift
from mmpeft.eval.vqa import vqa_accuracy
from mmpeft.vlm import VisionLanguageModel

log = logging.getLogger(__name__)


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def score_vqa(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    refs, preds = {}, {}
    for p in predictions:
        qid = p["eval"].get("question_id", p["id"])
        if "answers" not in p["eval"]:
            raise ValueError(f"VQA record {p['id']!r} has no eval.answers; convert it with the VQA fields kept")
        refs[qid] = p["eval"]
        preds[qid] = first_line(p["prediction"])
    return vqa_accuracy(preds, refs).to_dict()


def score_captions(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    refs, preds = {}, {}
    empty = 0
    for p in predictions:
        key = p["eval"].get("image_id", p["id"])
        if not p["eval"].get("captions"):
            raise ValueError(f"caption record {p['id']!r} has no eval.captions")
        refs[key] = p["eval"]["captions"]
        caption = first_line(p["prediction"])
        empty += not caption
        # an empty generation is a model failure, scored as a caption that matches nothing (and counted)
        preds.setdefault(key, caption or "<empty>")
    scores = caption_metrics(preds, refs)
    scores.pop("per_image_cider")
    scores["empty_predictions"] = empty
    return scores


def evaluate(vlm: VisionLanguageModel, renderer: ChatRenderer, *, vqa: str | list[str] | None = None,
             captions: str | list[str] | None = None, probes: list[Any] = (), vision: str | list[str] | None = None,
             vision_label_field: str | None = None, batch_size: int = 8, max_new_tokens: int | dict[str, int] = 16,
             limit: int | None = None, base_cache: dict[str, Any] | None = None,
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All requested evaluations; returns ``(scores, predictions)``.

    ``max_new_tokens`` may be a dict by task (``{"vqa": 8, "captions": 32}``): short answers decode faster.
    ``base_cache`` carries the base model's probe results between calls on models with the same base.
    """
    scores: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    skips = SkipLog()
    for name, spec, scorer in (("vqa", vqa, score_vqa), ("captions", captions, score_captions)):
        if spec is None:
            continue
        budget = max_new_tokens[name] if isinstance(max_new_tokens, dict) else max_new_tokens
        preds = predict(vlm, renderer, resolve_shards(spec), batch_size, budget, skips, limit,
                        description=f"{name} generation")
        scores[name] = scorer(preds)
        predictions += [{**p, "task": name} for p in preds]
    if probes:
        scores["text_probes"] = compare(vlm, probes, base_cache=base_cache)
    if vision is not None:
        pixels, labels = [], []
        for record, image in read_eval_records(resolve_shards(vision), vlm.vision.image_transform, skips):
            if image is None:
                continue
            pixels.append(image[:1])
            if vision_label_field:
                if vision_label_field not in record["eval"]:
                    raise ValueError(f"record {record['id']!r} has no eval.{vision_label_field} for the linear probe")
                labels.append(record["eval"][vision_label_field])
            if limit is not None and len(pixels) >= limit:
                break
        batches = [torch.cat(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        scores["vision"] = vision_drift(vlm, batches, labels if vision_label_field else None)
    scores["skipped"] = dict(skips.counts)
    return scores, predictions


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The data settings of the run the checkpoint came from (``<run>/config.yaml``), if it is in a run dir."""
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


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="mmpeft eval", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint or export directory")
    parser.add_argument("--vqa", nargs="+", help="VQA shards (directory, glob or brace pattern)")
    parser.add_argument("--captions", nargs="+", help="caption shards")
    parser.add_argument("--ppl", nargs="+", default=[], help="perplexity probe files, NAME=PATH or PATH (JSONL/.txt)")
    parser.add_argument("--mc", nargs="+", default=[], help="multiple-choice probe files (JSONL)")
    parser.add_argument("--em", nargs="+", default=[], help="exact-match generation probe files (JSONL)")
    parser.add_argument("--vision", nargs="+", help="image shards for the vision-side drift probe")
    parser.add_argument("--vision-label-field", help="eval field holding a class label, for the linear probe")
    parser.add_argument("--lm-eval-tasks", nargs="+", help="lm-evaluation-harness tasks (needs lm-eval)")
    parser.add_argument("--lm-eval-include", help="directory of local lm-eval task YAMLs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--limit", type=int, help="evaluate at most this many samples per task")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="output path without extension (default: <run>/eval/<checkpoint name>)")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    vlm = load_pretrained(checkpoint).to(args.device)
    data = _run_config(checkpoint)
    renderer = ChatRenderer(vlm.llm.tokenizer, vlm.llm.image_token, vlm.num_image_tokens,
                            max_length=args.max_length, system_prompt=data.get("system_prompt"),
                            use_chat_template=data.get("use_chat_template"))
    probes = ([PerplexityProbe(n, p) for n, p in _named(args.ppl, "--ppl")]
              + [MultipleChoiceProbe(n, p) for n, p in _named(args.mc, "--mc")]
              + [ExactMatchProbe(n, p) for n, p in _named(args.em, "--em")])
    scores, predictions = evaluate(
        vlm, renderer, vqa=args.vqa, captions=args.captions, probes=probes, vision=args.vision,
        vision_label_field=args.vision_label_field, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        limit=args.limit)
    if args.lm_eval_tasks:
        from mmpeft.eval.lm_eval_bridge import lm_eval_compare

        scores["lm_eval"] = lm_eval_compare(vlm, args.lm_eval_tasks, args.lm_eval_include, args.batch_size,
                                            args.limit)
    meta = json.loads((checkpoint / "mmpeft_config.json").read_text()).get("extra", {})
    scores = {"checkpoint": str(checkpoint), "step": meta.get("global_step"), **scores}
    out = Path(args.out) if args.out else (checkpoint.parent.parent / "eval" / checkpoint.name
                                           if checkpoint.parent.name == "checkpoints" else checkpoint / "eval")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(scores, indent=2, default=str))
    with open(out.with_suffix(".predictions.jsonl"), "w") as f:
        for p in predictions:
            f.write(json.dumps(p, default=str) + "\n")
    print(summary(scores))
    print(f"wrote {out.with_suffix('.json')}")
    return scores


def summary(scores: dict[str, Any]) -> str:
    lines = []
    if "vqa" in scores:
        lines.append(f"VQA accuracy {scores['vqa']['overall']:.2f} ({scores['vqa']['num_questions']} questions); "
                     f"by answer type {scores['vqa']['per_answer_type_mean']}")
    if "captions" in scores:
        c = scores["captions"]
        lines.append(f"captions: CIDEr-D {c['CIDEr-D']:.3f} BLEU-4 {c['BLEU-4']:.3f} ROUGE-L {c['ROUGE-L']:.3f} "
                     f"METEOR {c['METEOR']}")
    for name, r in scores.get("text_probes", {}).items():
        metrics = ", ".join(f"{k} {r['adapted'][k]:.4g} (base {r['base'][k]:.4g}, delta {v:+.4g})"
                            for k, v in r["delta"].items())
        lines.append(f"text probe {name}: {metrics}")
    if "vision" in scores:
        lines.append(f"vision drift: CKA {scores['vision']['cka']:.4f}, cosine {scores['vision']['cosine_pooled']:.4f}")
    return "\n".join(lines)
