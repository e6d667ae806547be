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

from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.checkpoint import add_loading_flags, load_pretrained, loading_options
from mmpeft.data.chat import ChatRenderer
from mmpeft.data.datamodule import resolve_shards
from mmpeft.data.input_format import input_format_from_data_config, renderer_for
from mmpeft.data.integrity import PartialData, ShardAudit, describe_losses
from mmpeft.data.schema import SampleError
from mmpeft.data.skips import SkipLog
from mmpeft.eval.captioning import TOKENIZERS, caption_metrics, check_tokenizer_usable
from mmpeft.eval.generate import count_skip, predict, read_eval_records
from mmpeft.eval.score_intervals import caption_intervals, vqa_intervals
from mmpeft.eval.text_probes import ExactMatchProbe, MultipleChoiceProbe, PerplexityProbe, compare
from mmpeft.eval.vision_probe import vision_drift
from mmpeft.eval.vqa import vqa_accuracy
from mmpeft.vlm import VisionLanguageModel

log = logging.getLogger(__name__)


def first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def _record(p: dict[str, Any]) -> str:
    """A prediction's record for messages: its id and, when known, ``<shard>:<key>``."""
    return f"{p['id']!r}" + (f" ({p['where']})" if p.get("where") else "")


def _first_by_key(seen: dict[str, dict[str, Any]], key: Any, p: dict[str, Any]) -> dict[str, Any] | None:
    """The prediction already seen under ``key`` (compared as text: the scorers' per-item keys are strings), else
    None after recording ``p`` under it."""
    first = seen.get(str(key))
    if first is None:
        seen[str(key)] = p
    return first


def score_vqa(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The official VQA accuracy of ``predictions`` (``predict``'s rows), keyed by ``eval.question_id`` (else the
    record id), with 95% intervals (``interval_95``).

    Raises:
        ValueError: a record without ``eval.answers``, or two records with the same question id (a data error:
            one question scored twice, or two questions sharing an id, either way one set of references would be
            lost), naming both records.
    """
    refs, preds = {}, {}
    seen: dict[str, dict[str, Any]] = {}
    for p in predictions:
        qid = p["eval"].get("question_id", p["id"])
        if "answers" not in p["eval"]:
            raise ValueError(f"VQA record {_record(p)} has no eval.answers; convert it with the VQA fields kept")
        first = _first_by_key(seen, qid, p)
        if first is not None:
            raise ValueError(f"VQA records {_record(first)} and {_record(p)} have the same question id {qid!r}: each "
                             "question must appear once (remove the duplicate from the eval set, or give the records "
                             "distinct eval.question_id)")
        refs[qid] = p["eval"]
        preds[qid] = first_line(p["prediction"])
    scores = vqa_accuracy(preds, refs).to_dict()
    scores["interval_95"] = vqa_intervals(scores, refs)  # over questions (mmpeft.eval.score_intervals)
    return scores


def score_captions(predictions: list[dict[str, Any]], tokenizer: str = "ptb") -> dict[str, Any]:
    """pycocoevalcap's caption metrics (``captioning.caption_metrics``): corpus figures, ``per_image`` scores and
    95% intervals over images for the metrics that are means of them (``interval_95``).

    One prediction per image, keyed by ``eval.image_id`` (else the record id): pycocoevalcap scores exactly one
    candidate caption per image (at salaniz/pycocoevalcap ad63453 its ``Bleu``, ``Meteor``, ``Rouge`` and ``Cider``
    each assert ``len(res[id]) == 1``, and ``COCOEvalCap.evaluate`` passes every result of an image), with all its
    references in one list.

    Raises:
        ValueError: a record without ``eval.captions``, or two records of one image (named), e.g. shards converted
            with ``--captions-per-image all`` (one training sample per reference caption): convert the eval split
            with the default, one sample per image holding every reference.
    """
    refs, preds = {}, {}
    seen: dict[str, dict[str, Any]] = {}
    empty = 0
    for p in predictions:
        key = p["eval"].get("image_id", p["id"])
        if not p["eval"].get("captions"):
            raise ValueError(f"caption record {_record(p)} has no eval.captions")
        first = _first_by_key(seen, key, p)
        if first is not None:
            raise ValueError(
                f"caption records {_record(first)} and {_record(p)} are both of image {key!r}: caption metrics "
                "(pycocoevalcap) score one prediction per image against all its references. Convert the eval split "
                "with one sample per image (data_prep/convert_coco_captions.py without --captions-per-image all), "
                "or give distinct images distinct eval.image_id")
        refs[key] = p["eval"]["captions"]
        caption = first_line(p["prediction"])
        empty += not caption
        # an empty generation is a model failure, scored as a caption that matches nothing (and counted)
        preds[key] = caption or "<empty>"
    scores = caption_metrics(preds, refs, tokenizer=tokenizer)
    scores["interval_95"] = caption_intervals(scores)
    scores["empty_predictions"] = empty
    return scores


def evaluate(vlm: VisionLanguageModel, renderer: ChatRenderer, *, vqa: str | list[str] | None = None,
             captions: str | list[str] | None = None, probes: list[Any] = (), vision: str | list[str] | None = None,
             vision_label_field: str | None = None, batch_size: int = 8, max_new_tokens: int | dict[str, int] = 16,
             limit: int | None = None, base_cache: dict[str, Any] | None = None, caption_tokenizer: str = "ptb",
             allow_partial: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All requested evaluations; returns ``(scores, predictions)``.

    ``max_new_tokens`` may be a dict by task (``{"vqa": 8, "captions": 32}``): short answers decode faster.
    ``base_cache`` carries the base model's probe results between calls on models with the same base.
    ``caption_tokenizer``: "ptb" (pycocoevalcap's Java PTBTokenizer) or "python" (its pure-Python twin).
    ``allow_partial``: score even when shard rows were lost or samples skipped (otherwise the first one raises
    ``PartialData``); ``scores["missing"]`` records what was missing either way, and ``limit`` (an explicit partial).
    Skips include records generation cannot prompt (``no_prompt``: plain text; ``too_long``: a prompt over the
    renderer's ``max_length``) and, for ``vision``, records without images (``no_image``).
    Duplicate question or image ids raise ``ValueError`` naming both records (``score_vqa``, ``score_captions``).
    """
    if captions is not None:
        check_tokenizer_usable(caption_tokenizer)  # fail before generating, not after
    scores: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    skips = SkipLog()
    audit = ShardAudit(allow_partial, allow_hint="--allow-partial (evaluate(..., allow_partial=True))")
    for name, spec, scorer in (("vqa", vqa, score_vqa),
                               ("captions", captions, lambda p: score_captions(p, caption_tokenizer))):
        if spec is None:
            continue
        budget = max_new_tokens[name] if isinstance(max_new_tokens, dict) else max_new_tokens
        preds = predict(vlm, renderer, resolve_shards(spec), batch_size, budget, skips, limit,
                        description=f"{name} generation", audit=audit)
        if not preds:  # every row skipped or lost (allow_partial), or shards without rows: no figure to give
            raise PartialData(f"no {name} sample left to score in {spec}; "
                              + missing_line({**audit.summary(), "limit": limit}))
        scores[name] = scorer(preds)
        predictions += [{**p, "task": name} for p in preds]
    if probes:
        scores["text_probes"] = compare(vlm, probes, base_cache=base_cache, renderer=renderer)  # the eval format
    if vision is not None:
        pixels, labels = [], []
        for record, image, where in read_eval_records(resolve_shards(vision), vlm.vision.image_transform, skips,
                                                      audit):
            if image is None:  # counted: a vision probe over a set with text rows measured fewer images than it read
                count_skip(SampleError("no_image", "a record without images: nothing for the vision probe", where),
                           skips, audit)
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
    scores["missing"] = {**audit.summary(), "limit": limit, "allow_partial": allow_partial}
    return scores, predictions


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


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="mmpeft eval", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint or export directory")
    parser.add_argument("--vqa", nargs="+", help="VQA shards (directory, glob or brace pattern)")
    parser.add_argument("--captions", nargs="+", help="caption shards")
    parser.add_argument("--caption-tokenizer", choices=TOKENIZERS, default="ptb",
                        help="ptb: pycocoevalcap's Java PTBTokenizer (needs java); python: the pure-Python tokenizer "
                             "that gives the same tokens (METEOR still needs java, else reported as null)")
    parser.add_argument("--ppl", nargs="+", default=[], help="perplexity probe files, NAME=PATH or PATH (JSONL/.txt)")
    parser.add_argument("--mc", nargs="+", default=[], help="multiple-choice probe files (JSONL)")
    parser.add_argument("--em", nargs="+", default=[], help="exact-match generation probe files (JSONL)")
    parser.add_argument("--vision", nargs="+", help="image shards for the vision-side drift probe")
    parser.add_argument("--vision-label-field", help="eval field holding a class label, for the linear probe")
    parser.add_argument("--lm-eval-tasks", nargs="+", help="lm-evaluation-harness tasks (needs lm-eval)")
    parser.add_argument("--lm-eval-include", help="directory of local lm-eval task YAMLs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-length", type=int, help="override the model directory's saved max_length")
    parser.add_argument("--system-prompt", help="override the model directory's saved system prompt")
    parser.add_argument("--limit", type=int, help="evaluate at most this many samples per task")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score even if shard rows were lost or samples skipped (refused otherwise); the scores "
                             "JSON and summary record how many were missing and why")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="output path without extension: writes OUT.json and OUT.predictions.jsonl "
                                      "(default: <run>/eval/<checkpoint name> for a run's checkpoint, else "
                                      "eval/<name> beside the model directory; never inside it)")
    add_loading_flags(parser)
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    out = output_path(checkpoint, args.out)  # a bad --out fails before the model loads
    vlm = load_pretrained(checkpoint, **loading_options(args)).to(args.device)
    if vlm.input_format is None:  # written before the format was saved: the run's config.yaml, if there is one
        vlm.input_format = input_format_from_data_config(vlm, _run_config(checkpoint))
    # prompts exactly as trained (mmpeft_config.json input_format), with explicit overrides only
    renderer = renderer_for(vlm, **{k: v for k, v in (("max_length", args.max_length),
                                                      ("system_prompt", args.system_prompt)) if v is not None})
    probes = ([PerplexityProbe(n, p) for n, p in _named(args.ppl, "--ppl")]
              + [MultipleChoiceProbe(n, p) for n, p in _named(args.mc, "--mc")]
              + [ExactMatchProbe(n, p) for n, p in _named(args.em, "--em")])
    try:
        scores, predictions = evaluate(
            vlm, renderer, vqa=args.vqa, captions=args.captions, probes=probes, vision=args.vision,
            vision_label_field=args.vision_label_field, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, limit=args.limit, caption_tokenizer=args.caption_tokenizer,
            allow_partial=args.allow_partial)
    except PartialData as e:
        raise SystemExit(f"mmpeft eval: {e}") from None
    if args.lm_eval_tasks:
        from mmpeft.eval.lm_eval_bridge import lm_eval_compare

        scores["lm_eval"] = lm_eval_compare(vlm, args.lm_eval_tasks, args.lm_eval_include, args.batch_size,
                                            args.limit)
    meta = json.loads((checkpoint / "mmpeft_config.json").read_text()).get("extra", {})
    scores = {"checkpoint": str(checkpoint), "step": meta.get("global_step"), **scores}
    scores_file, predictions_file = output_files(out)
    write_text_atomic(predictions_file, "".join(json.dumps(p, default=str) + "\n" for p in predictions))
    write_json_atomic(scores_file, scores, default=str)  # last: a scores file means its predictions are whole
    print(summary(scores))
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


def summary(scores: dict[str, Any]) -> str:
    lines = []
    if "vqa" in scores:
        lines.append(f"VQA accuracy {scores['vqa']['overall']:.2f} ({scores['vqa']['num_questions']} questions); "
                     "by answer type " + ", ".join(f"{t} {v:.2f}" for t, v in scores["vqa"]["per_answer_type"].items()))
    if "captions" in scores:
        c = scores["captions"]
        meteor = "n/a" if c["METEOR"] is None else f"{c['METEOR']:.3f}"
        lines.append(f"captions ({c['tokenizer']} tokens): CIDEr {c['CIDEr']:.3f} Bleu_4 {c['Bleu_4']:.3f} "
                     f"ROUGE_L {c['ROUGE_L']:.3f} METEOR {meteor}")
    for name, r in scores.get("text_probes", {}).items():
        metrics = ", ".join(f"{k} {r['adapted'][k]:.4g} (base {r['base'][k]:.4g}, delta {v:+.4g})"
                            for k, v in r["delta"].items())
        lines.append(f"text probe {name}: {metrics}")
    if "vision" in scores:
        lines.append(f"vision drift: CKA {scores['vision']['cka']:.4f}, cosine {scores['vision']['cosine_pooled']:.4f}")
    if "missing" in scores:
        lines.append(missing_line(scores["missing"]))
    return "\n".join(lines)


def missing_line(missing: dict[str, Any]) -> str:
    """What the scores leave out: skipped samples, lost rows (by shard), unchecked shards, an explicit --limit."""
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(missing["skipped"].items()))
    parts = [f"{missing['missing_rows']} row(s) missing" if missing["missing_rows"] or missing["damaged"]
             else "no rows missing"]
    if skipped:
        parts.append(f"skipped {skipped}")
    if missing["lost"] or missing["damaged"]:
        parts.append(f"lost {describe_losses(missing['lost'], missing['damaged'])}")
    parts.append(f"{missing['shards_checked']} shard read(s) checked against manifests"
                 + (f", {missing['unchecked_reads']} unchecked (no manifest)" if missing["unchecked_reads"] else ""))
    if missing["limit"] is not None:
        parts.append(f"--limit {missing['limit']} per task (partial by request)")
    return "data: " + "; ".join(parts)
