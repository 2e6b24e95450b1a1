"""Glob matching of push rules: the same answers as the obvious regex, in linear time."""

from __future__ import annotations

import random
import re
import time

import pytest

from trioserver.push.glob import WORD_END, WORD_START, Glob


def _reference(pattern: str, value: str, *, words: bool) -> bool:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        return re.search(WORD_START + body + WORD_END, value, re.DOTALL) is not None
    return re.fullmatch(body, value, re.DOTALL) is not None


def test_agrees_with_the_regex_on_random_inputs() -> None:
    rnd = random.Random(11)
    for _ in range(4_000):
        pattern = "".join(rnd.choice("ab*? ") for _ in range(rnd.randint(0, 6)))
        value = "".join(rnd.choice("ab _-") for _ in range(rnd.randint(0, 10)))
        for words in (False, True):
            expected = _reference(pattern, value, words=words)
            assert Glob(pattern, words=words).matches(value) is expected, (pattern, value, words)


@pytest.mark.parametrize(
    ("pattern", "value", "words", "matches"),
    [
        ("m.room.*", "m.room.message", False, True),
        ("m.room.*", "xm.room.message", False, False),
        ("*.message", "m.room.message", False, True),
        ("m.*.message", "m.room.message", False, True),
        ("m.*.mess?ge", "m.room.message", False, True),
        ("a*b*c", "abc", False, True),
        ("a*b*c", "acb", False, False),
        ("cake*lie", "the cake is a lie!", True, True),
        ("cake*lie", "the cake is a lier", True, False),
        ("*", "", False, True),
        ("*", "anything", True, True),
    ],
)
def test_examples(pattern: str, value: str, words: bool, matches: bool) -> None:
    assert Glob(pattern, words=words).matches(value) is matches


@pytest.mark.parametrize("words", [False, True])
def test_pathological_patterns_stay_fast(words: bool) -> None:
    glob = Glob("*a*a*a*a*a*a*a*a*b", words=words)
    # The needle ("b") is there, so the pieces are really searched.
    value = "b" + "a" * 60_000
    started = time.perf_counter()
    assert not glob.matches(value)
    assert time.perf_counter() - started < 1.0
