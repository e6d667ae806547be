"""Caption metrics exactly as pycocoevalcap's ``COCOEvalCap`` computes them: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Reference: pycocoevalcap 1.2 (github.com/salaniz/pycocoevalcap, tag v1.2 = commit
ad63453cfab57a81a02b2949b17a91fab1c3df77), ``eval.py``: tokenise references and predictions with ``PTBTokenizer``
(two calls: references, then predictions), then run its ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and ``Cider()``
and store ``eval[name]`` (corpus score) and ``imgToEval[image_id][name]`` (per image) under the names
``Bleu_1 .. Bleu_4, METEOR, ROUGE_L, CIDEr``. Its ``Cider`` is CIDEr-D (clipped counts, length penalty). We call
the same scorer classes on the same tokenised text, so the numbers are pycocoevalcap's to the last bit. SPICE,
the fifth scorer of ``COCOEvalCap``, is not computed (it downloads Stanford CoreNLP models on first use).

Tokenizer (an explicit choice, recorded in the output as ``"tokenizer"``):

- ``"ptb"`` (default): pycocoevalcap's own ``stanford-corenlp-3.4.1.jar`` PTBTokenizer with its options
  (``-preserveLines -lowerCase``) and its punctuation removal, run by ``java``. Without java on PATH this is an
  error naming the two fixes (install a JRE, or choose ``"python"``). One deliberate difference: pycocoevalcap only
  replaces ``\\n`` inside a caption, so a caption holding ``\\r``, ``\\v``, ``\\f``, U+2028 or U+2029 (which the
  lexer also reads as line breaks) shifts every later caption onto the wrong image; we replace those by spaces too.
- ``"python"``: ``mmpeft.eval.ptb_tokenizer``, a pure-Python re-implementation of that tokenizer for machines
  without java (identical tokens on every caption of tests/caption_corpus.py, 2,500 of them).

METEOR runs pycocoevalcap's ``meteor-1.5.jar`` and so needs java whatever the tokenizer. ``meteor=None`` (default)
computes it when java is on PATH; otherwise ``METEOR`` is None (also per image) and ``not_computed["METEOR"]`` says
why, so a table can show the gap instead of a silent zero. ``meteor=True`` makes a missing java an error;
``meteor=False`` skips it on purpose (recorded the same way).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from mmpeft.eval import ptb_tokenizer
from mmpeft.eval.matching import check_same_ids

log = logging.getLogger(__name__)

TOKENIZERS = ("ptb", "python")
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_JAVA_HINT = "install a Java runtime (e.g. `apt-get install default-jre-headless`; pycocoevalcap runs `java` from PATH)"


def java_available() -> bool:
    return shutil.which("java") is not None


def _corenlp_jar() -> str:
    from pycocoevalcap.tokenizer import ptbtokenizer

    return os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)),
                        ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)


def java_ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's ``PTBTokenizer`` on ``captions``, in ONE java call, as one stream in this order (the lexer
    looks across line ends, so the order matters in rare cases, e.g. ``U.S.`` before a line starting ``The``).

    Same jar, options and post-processing as ``PTBTokenizer.tokenize``; the input file goes to a temporary
    directory instead of pycocoevalcap's package directory, and the line count is checked instead of ``zip``-ped.
    """
    if not captions:
        return []
    check_tokenizer_usable("ptb")
    with tempfile.TemporaryDirectory(prefix="mmpeft-ptb-") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "wb") as f:
            f.write("\n".join(ptb_tokenizer.one_line(c) for c in captions).encode("utf-8"))
        cmd = ["java", "-cp", _corenlp_jar(), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
               "-lowerCase", path]
        done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed (exit {done.returncode}): "
                           f"{done.stderr.decode('utf-8', 'replace')[-2000:]}")
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) != len(captions):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in ptb_tokenizer.PUNCTUATION) for line in lines]


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer={tokenizer!r}: choose one of {TOKENIZERS} ('ptb': pycocoevalcap's Java "
                         "PTBTokenizer; 'python': its pure-Python re-implementation, for machines without java)")


def check_tokenizer_usable(tokenizer: str) -> None:
    """Raise now (before hours of generation) if ``tokenizer`` is unknown or needs a java that is missing."""
    _check_tokenizer(tokenizer)
    if tokenizer == "ptb" and not java_available():
        raise RuntimeError(f"tokenizer='ptb' runs pycocoevalcap's Java PTBTokenizer but `java` is not on PATH: "
                           f"{_JAVA_HINT}, or use tokenizer='python', the pure-Python tokenizer that gives the same "
                           "tokens: "
                           "`mmpeft eval --caption-tokenizer python` (it also overrides the caption tasks of --config "
                           "files), or `tokenizer: python` in an eval config's CaptionTask")


def tokenize(captions_for_image: Mapping[Any, Sequence[str]], tokenizer: str = "ptb") -> dict[Any, list[str]]:
    """``{image_id: [caption, ...]}`` -> ``{image_id: [tokenised caption, ...]}``, all captions in one stream like
    one ``PTBTokenizer().tokenize`` call."""
    _check_tokenizer(tokenizer)
    flat = [(k, c) for k, caps in captions_for_image.items() for c in caps]
    run = java_ptb_tokenize if tokenizer == "ptb" else ptb_tokenizer.tokenize_lines
    out: dict[Any, list[str]] = {}
    for (k, _), line in zip(flat, run([c for _, c in flat]), strict=True):
        out.setdefault(k, []).append(line)
    return out


def _check_inputs(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]]) -> None:
    check_same_ids(predictions, references, "image")
    for k, refs in references.items():
        if isinstance(refs, str):
            raise ValueError(f"references of image {k!r} must be a list of captions, not one string")
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(f"image {k!r} has no (non-empty) reference captions")
    empty = [k for k, p in predictions.items() if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"{len(empty)} empty prediction(s), e.g. image {empty[0]!r}; score them as a failure "
                         "explicitly (e.g. a placeholder word) rather than silently")


def _meteor(gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, per_image = scorer.compute_score(gts, res)
    except (ValueError, OSError) as e:  # the jar died: its stdout ended or the pipe broke
        scorer.meteor_p.kill()
        with contextlib.suppress(OSError):  # unsent input: closing raises BrokenPipe once (here, not in __del__)
            scorer.meteor_p.stdin.close()
        stderr = scorer.meteor_p.stderr.read().decode("utf-8", "replace")
        # compute_score left its lock held, and Meteor.__del__ takes that lock: release it or __del__ hangs
        if scorer.lock.locked():
            scorer.lock.release()
        raise RuntimeError(f"METEOR (meteor-1.5.jar) failed: {e!r}; java said: {stderr[-2000:]}") from e
    finally:
        del scorer  # Meteor.__del__ stops the JVM now rather than at garbage collection
    return score, per_image


def caption_metrics(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]], *,
                    tokenizer: str = "ptb", meteor: bool | None = None) -> dict[str, Any]:
    """Score ``{image_id: caption}`` against ``{image_id: [reference captions]}`` as pycocoevalcap does.

    Args:
        tokenizer: ``"ptb"`` (pycocoevalcap's Java PTBTokenizer) or ``"python"`` (its pure-Python twin).
        meteor: None: compute METEOR when java is on PATH; True: required (error without java); False: skip.

    Returns:
        ``{"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr": float (METEOR None when not computed),
        "per_image": {image_id: {same seven keys}}, "not_computed": {metric: reason}, "tokenizer": str,
        "num_images": int, "pycocoevalcap": version}``; scores unrounded, BLEU/METEOR/ROUGE_L in [0, 1], CIDEr
        (CIDEr-D) in [0, 10]. Images are in ``references`` order.

    Raises:
        ValueError: unknown tokenizer, mismatched ids, no predictions, an empty prediction, an image without
            references. RuntimeError: java needed (tokenizer="ptb" or meteor=True) but missing, or a jar failed.
    """
    _check_tokenizer(tokenizer)
    _check_inputs(predictions, references)
    check_tokenizer_usable(tokenizer)
    not_computed: dict[str, str] = {}
    if meteor is False:
        not_computed["METEOR"] = "skipped: meteor=False"
    elif not java_available():
        if meteor:
            raise RuntimeError(f"meteor=True but METEOR runs pycocoevalcap's meteor-1.5.jar and `java` is not on "
                               f"PATH: {_JAVA_HINT}, or pass meteor=False")
        not_computed["METEOR"] = "java not found on PATH (METEOR runs pycocoevalcap's meteor-1.5.jar)"
        log.warning("METEOR not computed: %s", not_computed["METEOR"])

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = list(references)
    # two tokenizer calls, references first, as COCOEvalCap.evaluate does
    gts = tokenize({k: references[k] for k in ids}, tokenizer)
    res = tokenize({k: [predictions[k]] for k in ids}, tokenizer)
    corpus: dict[str, float | None] = {}
    per_image: dict[str, list[float | None]] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, bleu_per_image = Bleu(4).compute_score(gts, res)
    for n in range(4):
        corpus[f"Bleu_{n + 1}"], per_image[f"Bleu_{n + 1}"] = bleu[n], bleu_per_image[n]
    if "METEOR" in not_computed:
        corpus["METEOR"], per_image["METEOR"] = None, [None] * len(ids)
    else:
        corpus["METEOR"], per_image["METEOR"] = _meteor(gts, res)
    corpus["ROUGE_L"], per_image["ROUGE_L"] = Rouge().compute_score(gts, res)
    corpus["CIDEr"], per_image["CIDEr"] = Cider().compute_score(gts, res)

    def number(x: Any) -> float | None:
        return None if x is None else float(x)

    return {**{m: number(corpus[m]) for m in METRICS},
            "per_image": {k: {m: number(per_image[m][i]) for m in METRICS} for i, k in enumerate(ids)},
            "not_computed": not_computed, "tokenizer": tokenizer, "num_images": len(ids),
            "pycocoevalcap": importlib.metadata.version("pycocoevalcap")}
