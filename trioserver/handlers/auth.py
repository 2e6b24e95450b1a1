"""Who is making a request: access tokens, their cache, and password hashing.

Authenticating a request must not cost a database round trip (DESIGN.md, "HTTP edge"), so
tokens that were seen once are kept in a bounded LRU cache. Every path that ends a token
(logout, device deletion, password change, deactivation) goes through `forget_tokens`, which
is the only place the cache shrinks other than eviction.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import attrs

import trio

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from trioserver.stores.accounts import AccountStore

# bcrypt only looks at the first 72 bytes; bcrypt>=5 raises instead of truncating, so we
# truncate ourselves (which also keeps hashes made by older bcrypt versions valid).
_BCRYPT_MAX_BYTES = 72


@attrs.frozen
class Requester:
    """The authenticated user behind a request."""

    user_id: str
    device_id: str
    access_token: str
    # Spec "Guest Access": guests may use only the endpoints the module lists.
    is_guest: bool = False


class TokenCache:
    """A bounded LRU map from access token to `Requester`."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._entries: collections.OrderedDict[str, Requester] = collections.OrderedDict()
        self._max_size = max_size

    def get(self, token: str) -> Requester | None:
        """The cached requester for `token`, marking it recently used."""
        requester = self._entries.get(token)
        if requester is not None:
            self._entries.move_to_end(token)
        return requester

    def put(self, requester: Requester) -> None:
        """Remember a token, evicting the least recently used one when full."""
        self._entries[requester.access_token] = requester
        if len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def discard(self, tokens: Iterable[str]) -> None:
        """Forget tokens that no longer work."""
        for token in tokens:
            self._entries.pop(token, None)


class AuthHandler:
    """Resolves access tokens and checks passwords."""

    def __init__(self, accounts: AccountStore, *, bcrypt_rounds: int) -> None:
        self._accounts = accounts
        self._bcrypt_rounds = bcrypt_rounds
        self._cache = TokenCache()
        self._invalidation_listeners: list[Callable[[Sequence[str]], Awaitable[None]]] = []

    async def requester_for_token(self, token: str) -> Requester:
        """The requester an access token belongs to (the HTTP edge extracts the token).

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN``.
        """
        requester = self._cache.get(token)
        if requester is None:
            row = await self._accounts.get_token(token)
            if row is None:
                raise MatrixError(
                    "M_UNKNOWN_TOKEN",
                    "Invalid access token passed.",
                    status=401,
                    extra={"soft_logout": False},
                )
            requester = Requester(row.user_id, row.device_id, row.token, row.is_guest)
            self._cache.put(requester)
        return requester

    def add_invalidation_listener(
        self, listener: Callable[[Sequence[str]], Awaitable[None]]
    ) -> None:
        """Have ``await listener(tokens)`` called by `forget_tokens` (main announces ended
        tokens on the caches stream, so that workers drop them too; issue 13)."""
        self._invalidation_listeners.append(listener)

    async def forget_tokens(self, tokens: Iterable[str]) -> None:
        """Drop ended tokens from the cache and tell the listeners; call after deleting the
        tokens from the database. Checkpoint: when there are listeners."""
        ended = list(tokens)
        self.forget_tokens_nowait(ended)
        if ended:
            for listener in self._invalidation_listeners:
                await listener(ended)

    def forget_tokens_nowait(self, tokens: Iterable[str]) -> None:
        """Drop tokens from this instance's cache only (a replicated invalidation)."""
        self._cache.discard(tokens)

    async def hash_password(self, password: str) -> str:
        """A bcrypt hash of `password`, computed in a worker thread. Checkpoint: yes."""
        import bcrypt  # see `check_password`

        secret = password.encode("utf-8")[:_BCRYPT_MAX_BYTES]
        salt = bcrypt.gensalt(self._bcrypt_rounds)
        hashed = await trio.to_thread.run_sync(bcrypt.hashpw, secret, salt)
        return hashed.decode("ascii")

    async def check_password(self, user_id: str, password: str) -> bool:
        """Whether `password` is the user's current password. Checkpoint: yes."""
        user = await self._accounts.get_user(user_id)
        if user is None or user.password_hash is None or user.deactivated:
            return False
        # Imported on first use: a worker forwards every request that checks or sets a
        # password to main, so it never loads bcrypt (issue 13, worker memory).
        import bcrypt

        secret = password.encode("utf-8")[:_BCRYPT_MAX_BYTES]
        stored = user.password_hash.encode("ascii")
        return await trio.to_thread.run_sync(bcrypt.checkpw, secret, stored)
