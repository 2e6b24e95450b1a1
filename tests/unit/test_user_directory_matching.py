"""How user-directory search terms match users (pure)."""

from __future__ import annotations

import pytest

from trioserver.handlers.user_directory import matches, search_words
from trioserver.stores.user_directory import DirectoryUser

USER = DirectoryUser("@alice.smith:blue", "Älice Wonder-Land", None)


def test_search_words() -> None:
    assert search_words("  Alice  Smith ") == ["alice", "smith"]
    assert search_words("@alice.smith:blue") == ["alice.smith", "blue"]
    assert search_words("alice. alice") == ["alice"]
    assert search_words("!!! ...") == []
    assert search_words("\uff21\uff2c\uff29\uff23\uff25") == ["alice"]  # NFKC: full-width letters


@pytest.mark.parametrize(
    "term", ["alice", "ALI", "smith", "alice.sm", "älice", "ÄLICE won", "land", "wonder-l", "blue"]
)
def test_matches(term: str) -> None:
    assert matches(USER, search_words(term))


@pytest.mark.parametrize("term", ["lice", "alice x", "ith", "onder", "alicesmith"])
def test_does_not_match(term: str) -> None:
    assert not matches(USER, search_words(term))


def test_user_without_display_name() -> None:
    user = DirectoryUser("@bob:blue", None, None)
    assert matches(user, ["bob"])
    assert not matches(user, ["bobby"])
