"""The Java ``PTBLexer`` of Stanford CoreNLP 3.4.1 (the jar pycocoevalcap bundles), re-implemented in Python.

Rules read from ``src/edu/stanford/nlp/process/PTBLexer.flex`` at tag v3.4.1 of github.com/stanfordnlp/CoreNLP
(commit bdb70c39645306e48aa295ae7b4734c4b8fd2f39; the jar was built from it on 2014-09-02, by JFlex 1.5.1) and
written here as Python data: named sub-patterns (``_MACROS``, expanded like the lexer's macros) and the rule table
(``_RULES``: pattern, trailing context, action) in the lexer's order. The options are those pycocoevalcap's call
gives (``-preserveLines``: the ptb3Escaping defaults plus ``tokenizeNLs``), so only those branches of the actions
exist here. Scanning follows JFlex: the longest match over all rules (trailing context counted, not consumed),
ties to the earlier rule, ``%caseless`` literals; actions may return fewer characters than matched
(``yypushback``). Behaviour checked against the jar, not assumed (tests/test_eval_captioning.py):

- the input is read as UTF-16 units, so a character beyond U+FFFF is two characters that no class holds (deleted
  as untokenizable) yet every negated class does (inside a URL);
- ``[:letter:]``/``[:digit:]`` are Unicode 6.x: letters assigned since are not letters for the jar
  (``_NEWER_LETTERS``, found by probing every BMP character against it);
  exact for Python's Unicode 15.0 (Python 3.11, 3.12); a newer Python also knows letters added since;
- the lexer's class ``[^...,-_$]`` (LIKELYURL) is a range from ',' to '_' and the first ASIANSMILEY alternative
  holds literal ``[^x=~<>]`` characters: kept as the jar has them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from mmpeft.eval.longest_match import Scanner

_WORDS = {
    # abbreviations kept whole before a lower-case word (else the period is also returned as a token)
    "ABMONTH": "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec",
    "ABDAYS": "Mon|Tue|Tues|Wed|Thu|Thurs|Fri",
    "ABSTATE": "Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn"
               "|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo",
    "ABCOMP": "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys",
    "ABNUM": "tel|est|ext|sq",
    "ABPTIT": "Jr|Sr|Bros|(?:Ed|Ph)\\.D|Blvd|Rd|Esq",
    # titles: abbreviations normally followed by a capitalised name
    "ABTITLE": "Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt"
               "|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme"
               "|Msgr|Sfc",
    "ABCOMP2": "Invt|Elec|Natl|M[ft]g|Dept",
    # after an acronym, these capitalised words mean the acronym also ended a sentence
    "SENTSTART": "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere"
                 "|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur"
                 "|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e"
                 "|[W]hen|[W]hile|[W]hat|[Y]et|[Y]ou",
    "FILENAME_EXT": "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl"
                    "|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip",
}
# Letters beyond the Unicode letter category: soft hyphen, combining marks and other marks of many scripts.
_EXTRA_LETTERS = (
    "\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF\u03F6"
    "\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4"
    "\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F"
    "\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963"
    "\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F"
    "\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56"
    "\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD")
# Stand-alone symbols (one token each): ASCII + % & ~ ^ | \, Latin-1 signs, arrows, maths, full-width punctuation.
_SYMBOLS = (
    "+%&~\\^|\\\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00BA\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6"
    "\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6-\u07F8\u0964"
    "\u0965\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E"
    "\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65")
# The jar's lexer tables are Unicode 6.x; Python 3.11's are Unicode 15.0. Letters and digits assigned since, and two
# Mongolian letters that became marks, found by probing every BMP character against the jar ("#" + c, c + "-x",
# "-" + c are one token iff c is a letter, a letter or digit, a digit).
_NEWER_LETTERS = (
    "\u037F\u0528-\u052F\u0560\u0588\u05EF\u0860-\u086A\u0870-\u0887\u0889-\u088E\u08A1\u08AD-\u08C9\u0978"
    "\u0980\u09FC\u0AF9\u0C34\u0C5A\u0C5D\u0C80\u0CDD\u0D04\u0D54-\u0D56\u0D5F\u0E86\u0E89\u0E8C\u0E8E-\u0E93"
    "\u0E98\u0EA0\u0EA8-\u0EA9\u0EAC\u13F5\u13F8-\u13FD\u16F1-\u16F8\u170D\u171F\u1878\u191D-\u191E"
    "\u19B0-\u19C0\u19C8-\u19C9\u1B4C\u1C80-\u1C88\u1C90-\u1CBA\u1CBD-\u1CBF\u1CF2-\u1CF3\u1CFA\u2C2F\u2C5F"
    "\u312E-\u312F\u31BB-\u31BF\u4DB6-\u4DBF\u9FCD-\u9FFF\uA698-\uA69D\uA78F\uA794-\uA79F\uA7AB-\uA7CA"
    "\uA7D0-\uA7D1\uA7D3\uA7D5-\uA7D9\uA7F2-\uA7F7\uA8FD-\uA8FE\uA9E0-\uA9E4\uA9E6-\uA9EF\uA9FA-\uA9FE"
    "\uAA7E-\uAA7F\uAB30-\uAB5A\uAB5C-\uAB69\uAB70-\uABBF")
_NEWER_DIGITS = "\u0DE6-\u0DEF\uA9F0-\uA9F9"
_FORMER_LETTERS = "\u1885-\u1886"


def _chars(spec: str) -> frozenset[str]:
    """The characters of ``"a-cx"``-style range text."""
    out: set[str] = set()
    for lo, hi in re.findall("(.)(?:-(.))?", spec, re.S):
        out.update(chr(o) for o in range(ord(lo), ord(hi or lo) + 1))
    return frozenset(out)


_NOT_LETTERS, _NOT_DIGITS, _OLD_LETTERS = _chars(_NEWER_LETTERS), _chars(_NEWER_DIGITS), _chars(_FORMER_LETTERS)
# JFlex's [:letter:] / [:digit:] / [:uppercase:] as the jar has them
_CLASSES = {
    "letter": lambda ch: (unicodedata.category(ch)[0] == "L" and ch not in _NOT_LETTERS) or ch in _OLD_LETTERS,
    "digit": lambda ch: unicodedata.category(ch) == "Nd" and ch not in _NOT_DIGITS,
    "upper": lambda ch: unicodedata.category(ch) == "Lu" and ch not in _NOT_LETTERS,
}
_NOT_URL = ' \\t\\n\\f\\r"<>|(){}'  # characters that end a URL

# Named sub-patterns, referenced as {NAME} (expanded recursively, like lexer macros).
_MACROS = {
    **_WORDS,
    "SGML": "<(?:[!?][A-Za-z\\-][^>\\r\\n]*|[A-Za-z][A-Za-z0-9_:.\\-]*(?: +(?:[A-Za-z][A-Za-z0-9_:.\\-]*"
            "|[A-Za-z][A-Za-z0-9_:.\\-]* *= *(?:'[^']*'|\"[^\"]*\")))* */?|/[A-Za-z][A-Za-z0-9_:.\\-]*) *>",
    "SPMDASH": "&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]",
    "SPAMP": "&amp;",
    "SPPUNC": "&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);",
    "SPLET": "&[aeiouAEIOU](?:acute|grave|uml);",
    "SPACE": "[ \\t\u00A0\u2000-\u200A\u3000]",
    "NEWLINE": "\\r|\\r?\\n|[\u2028\u2029\\x0b\\x0c\u0085]",
    "SPACENL": "{SPACE}|{NEWLINE}",
    "SENTEND": "{SPACENL}(?:{SPACENL}|\\p{upper}|{SGML})",
    "DIGIT": "[\\p{digit}\u07C0-\u07C9]",
    "DATE": "{DIGIT}{1,2}[\\-/]{DIGIT}{1,2}[\\-/]{DIGIT}{2,4}",
    "NUMBER": "[\\-+]?(?:{DIGIT}+|{DIGIT}*(?:[.:,\u00AD\u066B\u066C]{DIGIT}+)+)",
    "SUBSUPNUM": "[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)",
    "FRAC": "(?:{DIGIT}{1,4}[\\- \u00A0])?{DIGIT}{1,4}(?:\\\\?/|\u2044){DIGIT}{1,4}",
    "FRAC2": "[\u00BC\u00BD\u00BE\u2153-\u215E]",
    "DOLSIGN": "[A-Z]*\\$|#",
    "DOLSIGN2": "[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
    "LETTER": f"[\\p{{letter}}{_EXTRA_LETTERS}]|{{SPLET}}",
    "WORD": "{LETTER}(?:{LETTER}|{DIGIT})*(?:[.!?]{LETTER}(?:{LETTER}|{DIGIT})*)*",
    "FILENAME": "(?:{LETTER}|{DIGIT})+(?:\\.(?:{LETTER}|{DIGIT})+)*\\.(?:{FILENAME_EXT})",
    "LD": "[\\p{letter}\\p{digit}]",
    "THING": "(?:[dDoOlL]{APOSETCETERA}{LD})?{LD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETCETERA}{LD})?{LD}+)*",
    "THINGA": "[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+",
    "THING3": "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}",
    "APOS": "['\u0092\u2019]|&apos;",
    "APOSETCETERA": "{APOS}|[`\u0091\u2018\u201B]",
    "HTHING": "[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{ACRO2}\\.))+",
    "REDAUX": "{APOS}(?:[msdMSD]|re|ve|ll)",
    "SWORD": "[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*",
    "SREDAUX": "n{APOSETCETERA}t",
    "APOWORD": "{APOS}n{APOS}?|[lLdDjJ]{APOS}|Dunkin{APOS}|somethin{APOS}|ol{APOS}|{APOS}em"
               "|[A-HJ-XZn]{APOSETCETERA}\\p{letter}{2}\\p{letter}*|{APOS}[2-9]0s|{APOS}till?"
               "|\\p{letter}\\p{letter}*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z]\\p{letter}*|{APOS}cause|cont'd\\.?|'twas"
               "|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O{APOSETCETERA}o",
    "FULLURL": f"https?://[^{_NOT_URL}]+[^{_NOT_URL}.!?,\\-]",
    # [^...,-_$] in the lexer is a RANGE from ',' to '_' (digits, upper case and most ASCII punctuation excluded)
    "LIKELYURL": "(?:(?:www\\.(?:[^ \\t\\n\\f\\r\"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4})"
                 "|(?:(?:[^ \\t\\n\\f\\r\"`'<>|.!?(){},-_$]+\\.)+(?:com|net|org|edu)))"
                 "(?:/[^ \\t\\n\\f\\r\"<>|()]+[^ \\t\\n\\f\\r\"<>|.!?(){},\\-])?",
    "EMAIL": "(?:&lt;|<)?[a-zA-Z0-9][^ \\t\\n\\f\\r\"<>|()\u00A0{}]*@(?:[^ \\t\\n\\f\\r\"<>|(){}.\u00A0]+\\.)*"
             "[^ \\t\\n\\f\\r\"<>|(){}.\u00A0]+(?:&gt;|>)?",
    "TWITTER": "@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+",
    "ABBREV1": "(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\\.",
    "ACRO_SPECIAL": "(?:Canada|Sino|Korean|EU|Japan|non)-U\\.S|U\\.S\\.-(?:U\\.K|U\\.S\\.S\\.R)",
    "ACRO": "[A-Za-z](?:\\.[A-Za-z])*|{ACRO_SPECIAL}",
    "ACRO2": "[A-Za-z](?:\\.[A-Za-z])+|{ACRO_SPECIAL}",
    "ABBREV4": "{ABTITLE}|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|{ACRO}|{ABCOMP2}",
    "ABBREV3": "(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\\.",
    "PHONE": "(?:\\([0-9]{2,3}\\)[ \u00A0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[\\- \u00A0])?[0-9]{2,4}[\\- \u00A0])[0-9]{3,4}"
             "[\\- \u00A0]?[0-9]{3,5}|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}",
    "HYPHEN": "[\\-_\u058A\u2010\u2011]",
    "LDOTS": "\\.{3,5}|(?:\\.[ \u00A0]){2,4}\\.|[\u0085\u2026]",
    "INSENTP": "[,;:\u3001]",
    "QUOTES": "{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A"
              "\u00AB\u00BB]{1,2}",
    "DBLQUOT": "\"|&quot;",
    "TBSPEC": "-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls|Cap{APOS}n"
              "|c{APOS}est",
    "SMILEY": "[<>]?[:;=][\\-o*']?[()DPdpO\\\\{@|\\[\\]]",
    # the first alternative really is these literal characters after the dot (the lexer has "\\[" there)
    "ASIANSMILEY": "[\\^x=~<>]\\.\\[\\^x=~<>\\]|[\\-\\^x=~<>']_[\\-\\^x=~<>']|\\([\\-\\^x=~<>'][_.]?[\\-\\^x=~<>']\\)"
                   "|\\([\\^x=~<>']-[\\^x=~<>'`]\\)",
}
_MACRO_REF = re.compile(r"(?<!\\p)\{([A-Z][A-Z0-9_]*)\}")  # {NAME}, not \p{name}


def _expand(pattern: str) -> str:
    return _MACRO_REF.sub(lambda m: "(?:" + _expand(_MACROS[m.group(1)]) + ")", pattern)


# ---- token normalisations done by the lexer's actions (ptb3Escaping defaults) ----

def _drop_soft_hyphens(text: str) -> str:
    return text.replace("\u00AD", "") or "-"


def _no_break_spaces(text: str) -> str:
    return text.replace(" ", "\u00A0")


def _amp(text: str) -> str:
    return re.sub("(?i:&amp;)", "&", text)


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


_FRACTIONS = {"\u00BC": "1/4", "\u00BD": "1/2", "\u00BE": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00A2": "cents", "\u00A3": "#", "\u0080": "$", "\u00A4": "$", "\u20A0": "$", "\u20AC": "$"}
_LATEX_QUOTES = [("[\u0091\u2018\u201B\u2039]", "`"), ("[\u0092\u2019\u203A]", "'"), ("[\u0093\u201C\u00AB]", "``"),
                 ("[\u0094\u201D\u00BB]", "''")]


def _quotes(text: str, opening: bool) -> str:
    """LaTeX-style quotes: ASCII quotes become ` `` (opening) or ' '' (closing); curly ones by their shape."""
    text = re.sub("&apos;|'", "`" if opening else "'", text)
    text = re.sub("\"|&quot;", "``" if opening else "''", text)
    for pattern, repl in _LATEX_QUOTES:
        text = re.sub(pattern, repl, text)
    return text


Action = Callable[[str], "tuple[str | None, int]"]  # matched text -> (token or None, characters consumed)


def _same(text: str) -> tuple[str, int]:
    return text, len(text)


def _emit(normalise: Callable[[str], str]) -> Action:
    return lambda text: (normalise(text), len(text))


def _prefix(n: int) -> Action:
    """Return only the first n characters; the rest is scanned again (``yypushback``)."""
    return lambda text: (text[:n], n)


def _with_period_again(text: str) -> tuple[str, int]:
    # the abbreviation keeps its period, and the period is ALSO returned as the next token (sentence end)
    return text, len(text) - 1


def _acronym_at_sentence_end(text: str) -> tuple[str, int]:
    if len(text) == 2:  # "I." before "The": a one-letter word, then the period
        return text[:1], 1
    return _with_period_again(text)


def _skip(text: str) -> tuple[None, int]:
    return None, len(text)


def _hyphens(text: str) -> tuple[str, int]:
    return ("--" if 3 <= len(text) <= 4 else text), len(text)


NEWLINE_TOKEN = "*NL*"
# (pattern, trailing context or None, action), in the lexer's rule order: on equal lengths the earlier rule wins.
_RULES: list[tuple[str, str | None, Action]] = [
    ("c[+][+]", None, _same),
    ("(?:c|f)#", None, _same),
    ("cannot", None, _prefix(3)),
    ("'twas", None, _prefix(2)),
    ("'tis", None, _prefix(2)),
    ("gonna|gotta|lemme|gimme|wanna", None, _prefix(3)),
    ("{SGML}", None, _emit(_no_break_spaces)),
    ("{SPMDASH}", None, lambda t: ("--", len(t))),
    ("{SPAMP}", None, _emit(_amp)),
    ("{SPPUNC}", None, _same),
    ("{WORD}", "{REDAUX}", _emit(_drop_soft_hyphens)),
    ("{SWORD}", "{SREDAUX}", _emit(_drop_soft_hyphens)),
    ("{WORD}", None, _emit(_drop_soft_hyphens)),
    ("{APOWORD}", None, _same),
    ("y{APOS}", "\\p{letter}", _same),
    ("{FULLURL}", None, _same),
    ("{LIKELYURL}", None, _same),
    ("{EMAIL}", None, _same),
    ("{TWITTER}", None, _same),
    ("{REDAUX}", "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    ("{SREDAUX}", "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    ("{DATE}", None, _same),
    ("{NUMBER}", None, _emit(_drop_soft_hyphens)),
    ("{SUBSUPNUM}", None, _same),
    ("{FRAC}", None, _emit(_no_break_spaces)),
    ("{FRAC2}", None, _emit(lambda t: _FRACTIONS.get(t, t))),
    ("{TBSPEC}", None, _emit(_amp)),
    ("{THING3}", None, _same),
    ("{DOLSIGN}", None, _same),
    ("{DOLSIGN2}", None, _emit(lambda t: _CURRENCY.get(t, t))),
    ("{ACRO}\\.", "(?:{SPACENL})+(?:{SENTSTART}|{SGML}){SPACENL}", _acronym_at_sentence_end),
    ("{ABBREV3}", "(?:{SPACENL})?\\p{digit}", _same),
    ("(?:pt[eyEY]|co)\\.", "{SPACE}(?:ltd|lim)", _same),
    ("{ABBREV1}", "{SENTEND}", _with_period_again),
    ("{ABBREV1}", "\\p{Any}\\p{Any}", _same),
    ("{ABBREV1}", None, _with_period_again),
    ("(?:{ABBREV4})\\.", None, _same),
    ("{ABBREV4}", "{SPACE}", _same),
    ("{ACRO}", "{SPACENL}", _same),
    ("{APOS}[0-9][0-9]", "{SPACENL}", _same),
    ("{FILENAME}", "{SPACENL}|[.?!,]", _same),
    ("{WORD}\\.", "{INSENTP}", _emit(_drop_soft_hyphens)),
    ("{PHONE}", None, _emit(lambda t: _parens(_no_break_spaces(t)))),
    ("{DBLQUOT}", "[A-Za-z0-9$]", _emit(lambda t: _quotes(t, True))),
    ("{DBLQUOT}", None, _emit(lambda t: _quotes(t, False))),
    ("\\x7f", None, _skip),
    ("<|&lt;", None, lambda t: ("<", len(t))),
    (">|&gt;", None, lambda t: (">", len(t))),
    ("{SMILEY}", "[^A-Za-z0-9]", _emit(_parens)),
    ("{ASIANSMILEY}", None, _emit(_parens)),
    ("\\{", None, lambda t: ("-LCB-", 1)),
    ("\\}", None, lambda t: ("-RCB-", 1)),
    ("\\[", None, lambda t: ("-LSB-", 1)),
    ("\\]", None, lambda t: ("-RSB-", 1)),
    ("\\(", None, lambda t: ("-LRB-", 1)),
    ("\\)", None, lambda t: ("-RRB-", 1)),
    ("-+", None, _hyphens),
    ("{LDOTS}", None, lambda t: ("...", len(t))),
    ("@+|#+|_+", None, _same),
    ("\\*+|(?:\\\\\\*){1,3}", None, _same),
    ("{INSENTP}", None, _same),
    ("[?!]+", None, _same),
    ("[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _same),
    ("=", None, _same),
    ("/", None, _same),
    ("{HTHING}\\.", "{INSENTP}", _emit(_drop_soft_hyphens)),
    ("{HTHING}", None, _emit(_drop_soft_hyphens)),
    ("{THING}\\.", "{INSENTP}", _same),
    ("{THING}", None, _same),
    ("{THINGA}\\.", "{INSENTP}", _emit(_amp)),
    ("{THINGA}", None, _emit(_amp)),
    ("'", "[A-Za-z][^ \\t\\n\\r\u00A0]", _emit(lambda t: _quotes(t, True))),
    ("{REDAUX}", None, _emit(lambda t: _quotes(t, False))),
    ("{SREDAUX}", None, _emit(lambda t: _quotes(t, False))),
    ("{QUOTES}", None, _emit(lambda t: _quotes(t, False))),
    ("<<|>>", None, _same),
    (f"[{_SYMBOLS}]", None, _same),
    ("\\x00|{SPACE}+|[\u200B\u200E\u200F\uFEFF]", None, _skip),
    ("{NEWLINE}", None, lambda t: (NEWLINE_TOKEN, len(t))),
    ("&nbsp;", None, _skip),
    (".", None, _skip),  # untokenizable: deleted (the jar logs a warning)
]


class _Lexer:
    """The rule table compiled: one scanner over ``pattern + trailing context`` per rule, and per-rule scanners
    that find where the pattern ends and the trailing context (matched, not consumed) begins."""

    def __init__(self):
        self.scanner = Scanner([_expand(p) + ("" if t is None else "(?:" + _expand(t) + ")")
                                for p, t, _ in _RULES], caseless=True, classes=_CLASSES)
        with_context = [i for i, (_, t, _) in enumerate(_RULES) if t]
        self.heads = {i: Scanner([_expand(_RULES[i][0])], caseless=True, classes=_CLASSES) for i in with_context}
        self.tails = {i: Scanner([_expand(_RULES[i][1])], caseless=True, classes=_CLASSES) for i in with_context}

    def tokens(self, text: str) -> list[str]:
        """PTBLexer's tokens for ``text`` (not lower-cased), ``NEWLINE_TOKEN`` at each line break."""
        out, pos = [], 0
        while pos < len(text):
            match = self.scanner.longest(text, pos)
            if match is None:  # only "\n" can fail "." and it is a NEWLINE: unreachable, kept as a guard
                raise AssertionError(f"PTB lexer stuck at {text[pos:pos + 20]!r}")
            end, rule = match
            if rule in self.heads:
                end = self._head_end(rule, text, pos, end)
            token, consumed = _RULES[rule][2](text[pos:end])
            if token is not None:
                out.append(token)
            pos += consumed
        return out

    def _head_end(self, rule: int, text: str, pos: int, end: int) -> int:
        """Where the rule's own pattern ends inside a match of pattern + trailing context (the longest head)."""
        for split in range(end - 1, pos, -1):
            if self.heads[rule].fullmatch(text, pos, split) == 0 and self.tails[rule].fullmatch(text, split, end) == 0:
                return split
        raise AssertionError(f"no split for rule {rule} in {text[pos:end]!r}")


_LEXER: _Lexer | None = None
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def _utf16_units(text: str) -> str:
    """Characters beyond U+FFFF as two surrogate code points: the Java lexer reads UTF-16 units, so an emoji is
    two characters that no class holds (deleted as untokenizable) but every negated class does (inside URLs)."""
    def pair(m: re.Match) -> str:
        o = ord(m.group()) - 0x10000
        return chr(0xD800 + (o >> 10)) + chr(0xDC00 + (o & 0x3FF))

    return _ASTRAL.sub(pair, text)


def _from_utf16_units(token: str) -> str:
    return token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def lexer_tokens(text: str) -> list[str]:
    """The raw tokens of the Java ``PTBLexer`` (options as pycocoevalcap's call) for ``text``."""
    global _LEXER
    if _LEXER is None:
        _LEXER = _Lexer()
    if not _ASTRAL.search(text):
        return _LEXER.tokens(text)
    return [_from_utf16_units(t) for t in _LEXER.tokens(_utf16_units(text))]
