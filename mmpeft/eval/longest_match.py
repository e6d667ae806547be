"""Longest-match scanning over a list of patterns, the way a JFlex/lex scanner picks its next token.

``Scanner([p0, p1, ...]).longest(text, pos)`` returns ``(end, i)``: the longest prefix of ``text[pos:]`` matched by
any pattern, ties going to the pattern listed first. Python's ``re`` cannot do this (it returns the first
alternative that matches, not the longest), so patterns are compiled to one Thompson NFA that is turned into a
DFA lazily, one (state, character) transition at a time; a scan is then a few dict lookups per character.

Pattern syntax (a small subset of ``re``): literals; ``\\.``-style escapes, ``\\t \\n \\r \\f \\v \\xHH
\\uHHHH``; classes ``[...]`` / ``[^...]`` with ranges; named classes ``\\p{NAME}`` (predicates given to the
Scanner; usable inside ``[...]``) and ``\\p{Any}`` (any character; outside classes); ``.`` (anything but ``\\n``);
groups ``(...)`` / ``(?:...)``; ``|``; ``* + ?`` and ``{m}`` / ``{m,n}``. ``caseless=True`` makes literals outside
classes match both cases (classes stay as written, as in JFlex's ``%caseless``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}


class CharClass:
    """A set of characters: code-point ranges plus named classes (predicates), possibly negated."""

    __slots__ = ("ranges", "named", "negated")

    def __init__(self, ranges: Sequence[tuple[int, int]] = (), named: Sequence[Callable[[str], bool]] = (),
                 negated: bool = False):
        self.ranges = tuple(ranges)
        self.named = tuple(named)
        self.negated = negated

    def __contains__(self, ch: str) -> bool:
        o = ord(ch)
        hit = any(lo <= o <= hi for lo, hi in self.ranges) or any(member(ch) for member in self.named)
        return hit != self.negated


class _Parser:
    """Recursive-descent parser from pattern text to an AST of tuples: ("set", CharClass), ("seq", [..]),
    ("alt", [..]), ("rep", node, min, max | None)."""

    def __init__(self, pattern: str, caseless: bool, classes: Mapping[str, Callable[[str], bool]]):
        self.p, self.i, self.caseless, self.classes = pattern, 0, caseless, classes

    def parse(self):
        node = self.alternation()
        if self.i != len(self.p):
            raise ValueError(f"pattern {self.p!r}: unexpected {self.p[self.i]!r} at {self.i}")
        return node

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def alternation(self):
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self):
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return ("seq", items)

    def quantified(self, node):
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.i += 1
                node = ("rep", node, 1 if c == "+" else 0, 1 if c == "?" else None)
            elif c == "{":
                end = self.p.index("}", self.i)
                lo, _, hi = self.p[self.i + 1 : end].partition(",")
                node = ("rep", node, int(lo), int(hi) if hi else int(lo))
                self.i = end + 1
            else:
                return node

    def atom(self):
        c = self.p[self.i]
        if c == "(":
            self.i += 3 if self.p.startswith("(?:", self.i) else 1
            node = self.alternation()
            if self.peek() != ")":
                raise ValueError(f"pattern {self.p!r}: missing ')'")
            self.i += 1
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            self.i += 1
            return ("set", CharClass([(10, 10)], negated=True))
        if c == "\\" and self.p.startswith("\\p{", self.i):
            member = self.named_class()
            return ("set", CharClass(negated=True) if member is None else CharClass(named=[member]))
        ch = self.char()
        if self.caseless and ch.lower() != ch.upper():
            return ("set", CharClass(sorted({(ord(x), ord(x)) for x in (ch, ch.lower(), ch.upper()) if len(x) == 1})))
        return ("set", CharClass([(ord(ch), ord(ch))]))

    def named_class(self) -> Callable[[str], bool] | None:
        """The predicate of ``\\p{NAME}``; None for ``\\p{Any}`` (every character)."""
        end = self.p.index("}", self.i)
        name = self.p[self.i + 3 : end]
        self.i = end + 1
        if name == "Any":
            return None
        if name not in self.classes:
            raise ValueError(f"pattern {self.p!r}: unknown class \\p{{{name}}}; known: {sorted(self.classes)}")
        return self.classes[name]

    def char(self) -> str:
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return c
        e = self.p[self.i]
        self.i += 1
        if e in "xu":
            width = 2 if e == "x" else 4
            self.i += width
            return chr(int(self.p[self.i - width : self.i], 16))
        return _ESCAPES.get(e, e)

    def char_class(self) -> CharClass:
        self.i += 1
        negated = self.peek() == "^"
        self.i += negated
        ranges, named = [], []
        while self.peek() != "]":
            if self.p.startswith("\\p{", self.i):
                member = self.named_class()
                if member is None:
                    raise ValueError(f"pattern {self.p!r}: \\p{{Any}} inside a class; use it alone")
                named.append(member)
                continue
            lo = self.char()
            hi = lo
            if self.peek() == "-" and self.p[self.i + 1] != "]":
                self.i += 1
                hi = self.char()
            ranges.append((ord(lo), ord(hi)))
        self.i += 1
        return CharClass(ranges, named, negated)


class Scanner:
    """Longest match of several patterns at a position; ``longest`` is JFlex's choice of the next token."""

    def __init__(self, patterns: Sequence[str], caseless: bool = False,
                 classes: Mapping[str, Callable[[str], bool]] | None = None):
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[CharClass, int]]] = []
        self.accepting: dict[int, int] = {}
        start = self._state()
        for index, pattern in enumerate(patterns):
            begin = self._state()
            self.eps[start].append(begin)
            self.accepting[self._build(_Parser(pattern, caseless, classes or {}).parse(), begin)] = index
        self._ids: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._accept: list[int] = []
        self._moves: list[dict[str, int]] = []
        self.start = self._dfa_state(self._closure({start}))

    def _state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def _build(self, node, begin: int) -> int:
        """Add ``node`` to the NFA starting at ``begin``; return its end state."""
        kind = node[0]
        if kind == "set":
            end = self._state()
            self.edges[begin].append((node[1], end))
            return end
        if kind == "seq":
            for item in node[1]:
                begin = self._build(item, begin)
            return begin
        if kind == "alt":
            end = self._state()
            for branch in node[1]:
                self.eps[self._build(branch, begin)].append(end)
            return end
        _, inner, lo, hi = node
        for _ in range(lo):
            begin = self._build(inner, begin)
        if hi is None:  # star: loop back through a fresh entry state
            loop = self._state()
            self.eps[begin].append(loop)
            self.eps[self._build(inner, loop)].append(loop)
            return loop
        end = self._state()
        for _ in range(hi - lo):
            self.eps[begin].append(end)
            begin = self._build(inner, begin)
        self.eps[begin].append(end)
        return end

    def _closure(self, states) -> frozenset[int]:
        seen, todo = set(states), list(states)
        while todo:
            for t in self.eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)

    def _dfa_state(self, nfa_states: frozenset[int]) -> int:
        sid = self._ids.get(nfa_states)
        if sid is None:
            sid = self._ids[nfa_states] = len(self._sets)
            self._sets.append(nfa_states)
            rules = [self.accepting[s] for s in nfa_states if s in self.accepting]
            self._accept.append(min(rules) if rules else -1)
            self._moves.append({})
        return sid

    def _move(self, sid: int, ch: str) -> int:
        nxt = {t for s in self._sets[sid] for cls, t in self.edges[s] if ch in cls}
        target = self._dfa_state(self._closure(nxt)) if nxt else -1
        self._moves[sid][ch] = target
        return target

    def longest(self, text: str, pos: int, end: int | None = None) -> tuple[int, int] | None:
        """``(match_end, pattern_index)`` of the longest non-empty match starting at ``pos`` (ties: first
        pattern), looking no further than ``end``; None when nothing matches."""
        end = len(text) if end is None else end
        sid, best = self.start, None
        moves, accept = self._moves, self._accept
        for j in range(pos, end):
            ch = text[j]
            nxt = moves[sid].get(ch)
            sid = self._move(sid, ch) if nxt is None else nxt
            if sid < 0:
                break
            if accept[sid] >= 0:
                best = (j + 1, accept[sid])
        return best

    def fullmatch(self, text: str, pos: int, end: int) -> int:
        """Index of the first pattern matching exactly ``text[pos:end]``, or -1."""
        sid = self.start
        for j in range(pos, end):
            ch = text[j]
            nxt = self._moves[sid].get(ch)
            sid = self._move(sid, ch) if nxt is None else nxt
            if sid < 0:
                return -1
        return self._accept[sid]
