"""Caption metrics through pycocoevalcap, the COCO caption scorer: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

Captions are tokenised as the COCO evaluation does (``PTBTokenizer``: Stanford PTB tokenisation, lower-cased,
punctuation tokens removed), then scored by pycocoevalcap's own ``Bleu``/``Meteor``/``Rouge``/``Cider`` (its Cider
is CIDEr-D). Both PTBTokenizer and METEOR run Java. Without Java, METEOR is reported as ``None`` and captions go
through ``simple_ptb_tokenize``, a Python tokenizer that gives PTBTokenizer's tokens on ordinary captions (tested
against it); the scores are then marked ``"tokenizer": "python"``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from mmpeft.eval.matching import check_same_ids

log = logging.getLogger(__name__)

# The tokens pycocoevalcap's PTBTokenizer drops after tokenising.
PTB_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                   "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
_TOKEN = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b|\.\.\.|--|[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


def java_available() -> bool:
    return shutil.which("java") is not None


def simple_ptb_tokenize(caption: str) -> str:
    """Python stand-in for PTBTokenizer + punctuation removal: lower-case, clitics split, punctuation dropped."""
    text = caption.lower().replace("\n", " ")
    tokens = []
    for word in text.split():
        tokens += _TOKEN.findall(word.replace("n't", " n't"))
    # PTB escapes brackets (-LRB- ...) and -lowerCase lower-cases the escapes, so they survive the filter
    tokens = [_BRACKETS.get(t, t) for t in tokens]
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION and t.strip())


def tokenize(captions: Mapping[Any, Sequence[str]], use_java: bool) -> dict[Any, list[str]]:
    if not use_java:
        return {k: [simple_ptb_tokenize(c) for c in v] for k, v in captions.items()}
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()):
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def caption_metrics(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]],
                    meteor: bool | None = None) -> dict[str, Any]:
    """Score ``{image_id: caption}`` against ``{image_id: [reference captions]}``.

    Args:
        meteor: compute METEOR (needs Java); None: when Java is present.

    Returns:
        ``{"BLEU-1": ..., "BLEU-4": ..., "METEOR": ... | None, "ROUGE-L": ..., "CIDEr-D": ..., "tokenizer": ...,
        "num_images": n, "per_image_cider": {id: score}}`` (scores in [0, 1], CIDEr-D in [0, 10]).

    Raises:
        ValueError: mismatched ids, no predictions, an empty prediction or an image without references.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    check_same_ids(predictions, references, "image")
    for k, refs in references.items():
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(f"image {k!r} has no (non-empty) reference captions")
    empty = [k for k, p in predictions.items() if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"{len(empty)} empty prediction(s), e.g. image {empty[0]!r}; score them as a failure "
                         "explicitly (e.g. a placeholder word) rather than silently")
    use_java = java_available()
    if not use_java:
        log.warning("java not found: captions tokenised in Python (PTBTokenizer stand-in); METEOR skipped")
    ids = list(references)
    gts = tokenize({k: references[k] for k in ids}, use_java)
    res = tokenize({k: [predictions[k]] for k in ids}, use_java)
    out: dict[str, Any] = {"tokenizer": "ptb-java" if use_java else "python", "num_images": len(ids)}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print their internals
        bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, per_image = Cider().compute_score(gts, res)
        want_meteor = use_java if meteor is None else meteor
        if want_meteor and not use_java:
            raise RuntimeError("METEOR needs java on PATH")
        meteor_score = None
        if want_meteor:
            from pycocoevalcap.meteor.meteor import Meteor

            meteor_score, _ = Meteor().compute_score(gts, res)
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    out.update({"METEOR": None if meteor_score is None else float(meteor_score), "ROUGE-L": float(rouge),
                "CIDEr-D": float(cider), "per_image_cider": {k: float(s) for k, s in zip(ids, per_image)}})
    return out
