"""Search terms become FTS5 expressions of quoted tokens only (no I/O)."""

from __future__ import annotations

import random
import sqlite3

import pytest

from trioserver.handlers.search_query import parse_search_term


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(v, tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    conn.executemany(
        "INSERT INTO t (v) VALUES (?)",
        [("the red car is fast",), ("a car painted red",), ("blue boat",), ("AND OR NOT",)],
    )
    return conn


def matches(conn: sqlite3.Connection, term: str) -> list[str]:
    parsed = parse_search_term(term)
    if parsed.match is None:
        return []
    rows = conn.execute("SELECT v FROM t WHERE t MATCH ? ORDER BY rowid", (parsed.match,))
    return [str(row[0]) for row in rows]


def test_words_phrases_negation_and_or(fts: sqlite3.Connection) -> None:
    assert matches(fts, "red car") == ["the red car is fast", "a car painted red"]
    assert matches(fts, '"red car"') == ["the red car is fast"]
    assert matches(fts, "car -fast") == ["a car painted red"]
    assert matches(fts, "boat OR fast") == ["the red car is fast", "blue boat"]
    assert matches(fts, "bo") == ["blue boat"]  # a prefix
    assert matches(fts, "and not") == ["AND OR NOT"]  # operators are words


def test_what_has_no_words_matches_nothing() -> None:
    for term in ("", "   ", "!!!", "-car", "or", '""', "- -"):
        assert parse_search_term(term).match is None


def test_highlight_words_are_the_positive_ones() -> None:
    assert parse_search_term('Red "Big car" -fast or Boat').words == ("red", "big", "car", "boat")


def test_no_input_is_fts_syntax(fts: sqlite3.Connection) -> None:
    alphabet = "ab \"()*:^-+,.{}[]\\'ORANDNOTNEAR_é東\x00\t"
    rng = random.Random(11)
    for _ in range(2_000):
        term = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        matches(fts, term)  # never raises sqlite3.OperationalError
