"""Turning a user's search term into a safe FTS5 match expression (no I/O).

The syntax is the small web-search language Synapse accepts (``_tokenize_query``): words must
all match (each also as a prefix, as Synapse does on SQLite), ``"a phrase"`` matches those
words in a row, ``-word`` excludes events with the word, and ``or`` between words matches
either side. Everything else is text: each word is passed to FTS5 inside double quotes, which
FTS5 reads as a plain string, so characters such as ``"``, ``(``, ``*``, ``:`` or ``AND`` typed by
a user are never FTS5 syntax. Words are runs of letters and digits (what SQLite's
``unicode61`` tokenizer keeps); an unterminated quote runs to the end of the term.
"""

from __future__ import annotations

import re

import attrs

from trioserver.stores.search import fold_accents

# A phrase in double quotes (the closing one optional), or a run of non-space characters.
_CHUNK = re.compile(r'"(?P<phrase>[^"]*)"?|(?P<bare>[^\s"]+)')
_WORD = re.compile(r"[^\W_]+")


@attrs.frozen
class ParsedTerm:
    """A search term, parsed.

    Attributes:
        match: the FTS5 expression, or None when the term has no word that must match (then
            nothing can match).
        words: the words that must (or may) match, lower-cased, for ``highlights``.
        tsquery: the same expression for PostgreSQL's ``to_tsquery`` (each word a quoted
            lexeme, so nothing typed is tsquery syntax either); None when `match` is.
    """

    match: str | None
    words: tuple[str, ...]
    tsquery: str | None = None


def _quoted(words: list[str]) -> str:
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


def _lexemes(words: list[str], *, prefix: bool) -> str:
    folded = [fold_accents(w) for w in words]
    quoted = ["'" + w.replace("'", "''").replace("\\", "\\\\") + "'" for w in folded]
    if prefix:
        quoted[-1] += ":*"
    return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"


def parse_search_term(term: str) -> ParsedTerm:
    """Parse a search term (see the module docstring); never fails."""
    groups: list[list[str]] = [[]]
    negated: list[str] = []
    pg_groups: list[list[str]] = [[]]
    pg_negated: list[str] = []
    words: list[str] = []
    for chunk in _CHUNK.finditer(term):
        phrase, bare = chunk.group("phrase"), chunk.group("bare")
        if bare is not None and bare.lower() == "or":
            if groups[-1]:
                groups.append([])
                pg_groups.append([])
            continue
        negate = bare is not None and bare.startswith("-")
        found = _WORD.findall(phrase if phrase is not None else bare)
        if not found:
            continue
        if negate:
            negated.append(_quoted(found))
            pg_negated.append(_lexemes(found, prefix=False))
            continue
        words.extend(w.lower() for w in found)
        # A typed word also matches as a prefix ("mess" finds "message"); a quoted phrase
        # matches exactly.
        groups[-1].append(_quoted(found) + ("*" if phrase is None else ""))
        pg_groups[-1].append(_lexemes(found, prefix=phrase is None))
    alternatives = [g for g in groups if g]
    if not alternatives:
        return ParsedTerm(None, tuple(dict.fromkeys(words)))
    match = " OR ".join("(" + " AND ".join(g) + ")" for g in alternatives)
    tsquery = " | ".join("(" + " & ".join(g) + ")" for g in pg_groups if g)
    if negated:
        match = f"({match}) NOT ({' OR '.join(negated)})"
        tsquery = f"({tsquery}) & !({' | '.join(pg_negated)})"
    return ParsedTerm(match, tuple(dict.fromkeys(words)), tsquery)
