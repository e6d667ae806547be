"""``CaptionTask``: pycocoevalcap's caption metrics (``mmpeft.eval.captioning``) of greedy captions."""

from __future__ import annotations

from typing import Any, Literal

from mmpeft.eval.captioning import TOKENIZERS, caption_metrics, check_tokenizer_usable
from mmpeft.eval.score_intervals import caption_intervals
from mmpeft.eval.tasks.generation import GenerationTask, describe_record, first_by_key, first_line


def score_captions(predictions: list[dict[str, Any]], tokenizer: str = "ptb") -> dict[str, Any]:
    """pycocoevalcap's caption metrics (``captioning.caption_metrics``): corpus figures, ``per_image`` scores and
    95% intervals over images for the metrics that are means of them (``interval_95``).

    One prediction per image, keyed by ``eval.image_id`` (else the record id): pycocoevalcap scores exactly one
    candidate caption per image (at salaniz/pycocoevalcap ad63453 its ``Bleu``, ``Meteor``, ``Rouge`` and ``Cider``
    each assert ``len(res[id]) == 1``, and ``COCOEvalCap.evaluate`` passes every result of an image), with all its
    references in one list. An empty first line is scored as a caption that matches nothing, and counted
    (``empty_predictions``).

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
            raise ValueError(f"caption record {describe_record(p)} has no eval.captions")
        first = first_by_key(seen, key, p)
        if first is not None:
            raise ValueError(
                f"caption records {describe_record(first)} and {describe_record(p)} are both of image {key!r}: "
                "caption metrics (pycocoevalcap) score one prediction per image against all its references. "
                "Convert the eval split with one sample per image (data_prep/convert_coco_captions.py without "
                "--captions-per-image all), or give distinct images distinct eval.image_id")
        refs[key] = p["eval"]["captions"]
        caption = first_line(p["prediction"])
        empty += not caption
        preds[key] = caption or "<empty>"  # a model failure, scored as a caption that matches nothing
    scores = caption_metrics(preds, refs, tokenizer=tokenizer)
    scores["interval_95"] = caption_intervals(scores)
    scores["empty_predictions"] = empty
    return scores


class CaptionTask(GenerationTask):
    """Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) of greedy captions, one per image (``score_captions``).

    Args:
        shards: caption shards (records with ``eval.captions``, optional ``eval.image_id``).
        name: the key of the scores (default ``captions``).
        max_new_tokens: caption budget (None: the evaluation's).
        tokenizer: ``ptb`` (pycocoevalcap's Java PTBTokenizer; needs java, checked before any task runs) or
            ``python`` (its pure-Python twin, same tokens; METEOR still needs java, else reported as null).
    """

    empty_scores = {"num_images": 0}

    def __init__(self, shards: str | list[str], name: str = "captions", max_new_tokens: int | None = None,
                 tokenizer: Literal["ptb", "python"] = "ptb"):
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"CaptionTask {name!r}: tokenizer={tokenizer!r}; choose one of {TOKENIZERS}")
        super().__init__(shards, name, max_new_tokens)
        self.tokenizer = tokenizer

    def check(self) -> None:
        super().check()
        check_tokenizer_usable(self.tokenizer)  # fail before generating, not after

    def score(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return score_captions(predictions, self.tokenizer)

    def summary(self, scores: dict[str, Any]) -> list[str]:
        if "CIDEr" not in scores:
            return [f"{self.name}: no image scored"]
        meteor = "n/a" if scores["METEOR"] is None else f"{scores['METEOR']:.3f}"
        return [f"captions ({scores['tokenizer']} tokens): CIDEr {scores['CIDEr']:.3f} Bleu_4 {scores['Bleu_4']:.3f} "
                f"ROUGE_L {scores['ROUGE_L']:.3f} METEOR {meteor}"]
