"""Glob patterns of push rules (spec appendix "Glob-style matching": ``*`` any run of
characters, ``?`` exactly one), matched without a backtracking regex.

A pattern like ``*a*a*a*b`` turned into ``.*?a.*?a.*?a.*?b`` takes time growing with a power of
the value's length when it fails, and patterns are the user's choice while values are the
sender's: a user could stall the send path. Here the pattern is split at its ``*``s instead.
The pieces in between hold only literal characters and ``?``, so each has a fixed length and
is found by a simple regex; taking each piece's leftmost occurrence after the previous one is
always right for globs, so one pass does it. Boundaries (``content.body`` matches between
word boundaries, spec "Conditions") constrain only where the first piece starts and the last
one ends, which leaves leftmost placement right too.

Patterns and values are expected lower-cased by the caller (matching is case-insensitive).
"""

from __future__ import annotations

import re
from typing import Final

# Spec: a word boundary is the start or end of the value or a character not in [A-Za-z0-9_]
# (ASCII, as matrix-js-sdk evaluates it in clients).
WORD_START: Final = r"(?<![A-Za-z0-9_])"
WORD_END: Final = r"(?![A-Za-z0-9_])"


def _piece(text: str, *, start: bool = False, end: bool = False) -> re.Pattern[str]:
    body = "".join("." if ch == "?" else re.escape(ch) for ch in text)
    return re.compile((WORD_START if start else "") + body + (WORD_END if end else ""), re.DOTALL)


class Glob:
    """A compiled glob: `matches` the whole value, or (``words``) any substring of it that
    starts and ends at word boundaries."""

    __slots__ = ("_first", "_last", "_last_len", "_middles", "_single", "_words", "needle")

    def __init__(self, pattern: str, *, words: bool) -> None:
        pieces = pattern.split("*")
        # The longest literal run: a value without it cannot match (a cheap `in` test).
        self.needle: str = max((p for part in pieces for p in part.split("?")), key=len)
        self._words = words
        self._single: re.Pattern[str] | None = None
        self._first: re.Pattern[str] | None = None
        self._last: re.Pattern[str] | None = None
        self._middles: tuple[re.Pattern[str], ...] = ()
        self._last_len = 0
        if len(pieces) == 1:
            self._single = _piece(pattern, start=words, end=words)
            return
        first, *middles, last = pieces
        if first:
            self._first = _piece(first, start=words)
        self._middles = tuple(_piece(m) for m in middles if m)
        if last:
            self._last = _piece(last, end=words)
        self._last_len = len(last)

    def matches(self, value: str) -> bool:
        """Whether `value` (lower-cased) matches."""
        if self.needle not in value:
            return False
        if self._single is not None:
            if self._words:
                return self._single.search(value) is not None
            return self._single.fullmatch(value) is not None
        pos = 0
        if self._first is not None:
            found = self._first.search(value) if self._words else self._first.match(value)
            if found is None:
                return False
            pos = found.end()
        # The whole value: the last piece sits at its very end, the middle ones before it.
        limit = len(value) if self._words else len(value) - self._last_len
        if limit < pos:
            return False
        for middle in self._middles:
            found = middle.search(value, pos, limit)
            if found is None:
                return False
            pos = found.end()
        if self._last is None:
            # A trailing `*` runs to the end of the value, which is a boundary.
            return True
        if self._words:
            return self._last.search(value, pos) is not None
        return self._last.fullmatch(value, limit) is not None
