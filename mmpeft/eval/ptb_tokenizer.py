"""Pure-Python stand-in for pycocoevalcap's PTBTokenizer, for machines without java: the same tokens.

pycocoevalcap 1.2 (github.com/salaniz/pycocoevalcap, tag v1.2 = commit ad63453cfab57a81a02b2949b17a91fab1c3df77,
``tokenizer/ptbtokenizer.py``) writes the captions one per line (``\n`` inside a caption replaced by a space) to a
file, runs ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase
FILE``, takes output line i as caption i's tokens, and drops the tokens in ``PUNCTUATION``
(``line.rstrip().split(' ')``, exact, case-sensitive matches). Here: the same lines through ``ptb_lexer`` (the
jar's lexer in Python), Java 17's ``toLowerCase(Locale.ENGLISH)`` (``java_lower``), the same filter.

What a user sees (each case checked against the jar in tests/test_eval_captioning.py):

- all captions are ONE lexer stream and the lexer looks past line ends: ``"A plan B."`` gives ``a plan b`` before
  a line starting ``"The"`` and ``a plan b.`` otherwise; tokenise in pycocoevalcap's order to agree exactly;
- brackets become ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and are kept (the filter lists them upper-case);
- ASCII and curly quotes become ``` `` ``` / ``''`` (dropped); ``&amp;`` is ``&``, ``½`` is ``1/2``, ``€`` is ``$``;
- ``!!!`` and ``?!`` stay one token and are kept (only ``!`` and ``?`` are dropped); ``-----`` is kept, while
  ``---`` and ``----`` become ``--`` (dropped); ``... …`` become ``...`` (dropped);
- ``cannot gonna don't it's`` split to ``can not gon na do n't it 's``;
- abbreviations and acronyms keep their period (``mr.`` ``u.s.`` ``etc.``); ``1 1/2`` is one token joined by a
  no-break space (U+00A0); URLs, e-mails, ``@names``, ``#tags``, ``x-ray`` stay whole; ``:)`` is ``:-rrb-``;
- characters the lexer does not know (emoji, most symbols) are deleted.

pycocoevalcap replaces only ``\n``; the lexer also breaks lines at ``\r \v \f U+2028 U+2029``, so such a caption
shifts every later caption onto the wrong image. ``one_line`` replaces those too (as does our Java path).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from mmpeft.eval.ptb_lexer import NEWLINE_TOKEN, lexer_tokens

# pycocoevalcap's PUNCTUATIONS: tokens dropped after tokenisation (exact, case-sensitive matches).
PUNCTUATION = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                         "--", "...", ";"})
# Characters the lexer treats as a line break (its NEWLINE, minus U+0085 which an earlier rule reads as "...").
LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\u2028\u2029]")

# Java's word-boundary classes (java.text.BreakIterator word instance), for its final-sigma rule below.
_MID_WORD = frozenset("\u00ad\u2027\"'.")
_MID_NUMBER = frozenset("\"',\u066b.")
_KANA_KANJI = frozenset(chr(o) for lo, hi in ((0x3005, 0x3005), (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0xF900, 0xFA6A),
                                              (0x3099, 0x309C), (0x30A1, 0x30FE), (0x3041, 0x309E), (0x30FC, 0x30FC))
                        for o in range(lo, hi + 1))


def _sigma_is_final(token: str, i: int) -> bool:
    """Java's ``toLowerCase`` gives U+03C2 (final sigma) for the capital sigma at ``token[i]`` when a cased letter
    precedes it and none follows it inside the same word, words as Java's BreakIterator sees them (letters and
    digits, joined by dashes, underscores, ASCII quotes and periods between letters): so "ΑΣ3" ends in ς but
    "ΑΣ-Β" keeps σ, where Python's ``str.lower`` (Unicode's case-ignorable rule) says the opposite."""
    def in_word(j: int) -> bool:
        ch = token[j]
        kind = unicodedata.category(ch)
        if kind[0] in "LN" or kind in ("Mc", "Mn", "Me", "Cf"):
            return ch not in _KANA_KANJI  # kana and kanji are words of their own
        inside = 0 <= j - 1 and j + 1 < len(token)
        if not inside:
            return False
        before, after = unicodedata.category(token[j - 1]), unicodedata.category(token[j + 1])
        if (ch in _MID_WORD or kind in ("Pd", "Pc")) and before[0] == "L" and after[0] == "L":
            return True
        return ch in _MID_NUMBER and before == "Nd" and after == "Nd"

    def cased(ch: str) -> bool:
        return unicodedata.category(ch) in ("Lu", "Ll", "Lt")

    j = i - 1
    while j >= 0 and in_word(j) and not cased(token[j]):
        j -= 1
    if j < 0 or not cased(token[j]) or not in_word(j):
        return False
    j = i + 1
    while j < len(token) and in_word(j):
        if cased(token[j]):
            return False
        j += 1
    return True


def java_lower(token: str) -> str:
    """``token.toLowerCase(Locale.ENGLISH)`` as Java 17 does it (differs from ``str.lower`` only for capital sigma)."""
    if "\u03a3" not in token:
        return token.lower()
    return "".join(("\u03c2" if _sigma_is_final(token, i) else "\u03c3") if ch == "\u03a3" else ch.lower()
                   for i, ch in enumerate(token))


def one_line(caption: str) -> str:
    """A caption as one line of the tokenizer's input: every character the lexer reads as a line break becomes a
    space (pycocoevalcap replaces only ``\\n``, which misaligns captions holding ``\\r`` and the like)."""
    return LINE_BREAKS.sub(" ", caption)


def tokenize_lines(captions: Sequence[str]) -> list[str]:
    """What pycocoevalcap's PTBTokenizer returns for ``captions`` tokenised in one call, in this order: one string
    per caption, lower-cased tokens joined by single spaces, punctuation tokens dropped."""
    if not captions:
        return []
    lines: list[list[str]] = [[]]
    for token in lexer_tokens("\n".join(one_line(c) for c in captions)):
        if token == NEWLINE_TOKEN:
            lines.append([])
        else:
            lines[-1].append(java_lower(token))
    if len(lines) != len(captions):
        raise AssertionError(f"{len(captions)} captions gave {len(lines)} lines")
    return [" ".join(t for t in " ".join(line).rstrip().split(" ") if t not in PUNCTUATION) for line in lines]


def tokenize(captions_for_image: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """``{image_id: [caption, ...]}`` -> ``{image_id: [tokenised caption, ...]}``, like pycocoevalcap's
    ``PTBTokenizer().tokenize`` (which takes ``[{"caption": ...}]`` lists) with all captions in one stream."""
    flat = [(k, c) for k, caps in captions_for_image.items() for c in caps]
    out: dict[Any, list[str]] = {}
    for (k, _), line in zip(flat, tokenize_lines([c for _, c in flat]), strict=True):
        out.setdefault(k, []).append(line)
    return out
