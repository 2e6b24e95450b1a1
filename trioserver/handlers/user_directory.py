"""Searching for users (``POST /user_directory/search``).

The search term is split into words; a user matches when every word is a prefix of a word of
their user id or display name, compared case-insensitively after NFKC normalisation (like
Synapse's full-text search, which matches word prefixes). Which users may be found at all is
decided by `UserDirectoryStore` (shared and public rooms). Results are ordered by how well
they match, then by whether a display name and avatar exist (spec: "Ordered by rank and then
whether or not profile info is available").
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from trioserver.stores.user_directory import DirectoryUser, UserDirectoryStore

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.database import Database
    from trioserver.stores.state import StateStore
    from trioserver.streams import StreamPositions

JsonDict = dict[str, Any]
# How many candidate rows one search may look at (a bound on a very broad term).
MAX_CANDIDATES = 2_000
_WORD = re.compile(r"\w[\w.\-=/+]*")
_SIMPLE_WORD = re.compile(r"\w+")
_TRAILING = ".-=/+"


def normalise(text: str) -> str:
    """Case-fold and NFKC-normalise `text` for matching."""
    return unicodedata.normalize("NFKC", text.casefold())


def search_words(term: str) -> list[str]:
    """The words of a search term (user-id punctuation such as ``.`` stays inside a word)."""
    words = (word.rstrip(_TRAILING) for word in _WORD.findall(normalise(term)))
    return list(dict.fromkeys(word for word in words if word))


def _tokens(text: str) -> set[str]:
    text = normalise(text)
    return {text, *_WORD.findall(text), *_SIMPLE_WORD.findall(text)}


def _fields(user: DirectoryUser) -> tuple[str, str]:
    localpart = user.user_id[1:].split(":", 1)[0]
    return localpart, user.display_name or ""


def matches(user: DirectoryUser, words: list[str]) -> bool:
    """Whether every word prefixes a word of the user's id or display name."""
    tokens = _tokens(user.user_id) | _tokens(user.display_name or "")
    return all(any(token.startswith(word) for token in tokens) for word in words)


def _rank(user: DirectoryUser, term: str) -> tuple[bool, bool, bool, bool, str]:
    fields = [normalise(f) for f in _fields(user) if f]
    exact = term in fields
    prefix = any(f.startswith(term) for f in fields)
    return (
        not exact,
        not prefix,
        user.display_name is None,
        user.avatar_url is None,
        user.user_id,
    )


def _result(user: DirectoryUser) -> JsonDict:
    result: JsonDict = {"user_id": user.user_id}
    # Spec: display_name and avatar_url are strings, present "if one exists".
    if user.display_name is not None:
        result["display_name"] = user.display_name
    if user.avatar_url is not None:
        result["avatar_url"] = user.avatar_url
    return result


class UserDirectoryHandler:
    """Searching for users."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
    ) -> None:
        self._store = UserDirectoryStore(db)

    async def load(self) -> None:
        """Nothing to read at start (the directory is computed from room state)."""

    async def search(self, requester: str, term: str, limit: int) -> JsonDict:
        """Users `requester` may find that match `term`, best first.

        Returns:
            ``{"results": [...], "limited": bool}``; `limited` says more matched than `limit`.
            Checkpoint: yes.
        """
        words = search_words(term)
        if not words:
            return {"results": [], "limited": False}
        ascii_words = [w for w in words if w.isascii()]
        candidates = await self._store.candidates(requester, ascii_words, MAX_CANDIDATES)
        found = [user for user in candidates if matches(user, words)]
        key = normalise(term).strip().lstrip("@")
        found.sort(key=lambda user: _rank(user, key))
        limited = len(found) > limit or len(candidates) >= MAX_CANDIDATES
        return {"results": [_result(user) for user in found[:limit]], "limited": limited}
