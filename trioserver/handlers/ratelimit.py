"""Token-bucket rate limiting per user or per IP address.

Each key (a user id or an IP) has a bucket of at most `burst_count` tokens that refills at
`per_second`. An action takes one token; with none left it is refused with 429
``M_LIMIT_EXCEEDED`` and ``retry_after_ms`` saying when a token will be back.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import attrs

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.config import RateLimit, RatelimitConfig

# Buckets that have refilled completely carry no information; past this many keys they are
# pruned so that a stream of distinct IPs cannot grow the table without bound.
_PRUNE_ABOVE = 10_000


class Ratelimiter:
    """One kind of action's buckets."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._enabled = enabled
        self._clock = clock
        # key -> (tokens left, time of that reading)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (self._limit.burst_count, now))
        return min(self._limit.burst_count, tokens + (now - then) * self._limit.per_second)

    def check(self, key: str, *, update: bool = True) -> None:
        """Take one token from `key`'s bucket (only look when `update` is False).

        Looking first lets a multi-step action (registration through UIA) be refused at its
        first step rather than after the client completed every step.

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.
        """
        if not self._enabled:
            return
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            wait_s = (1 - tokens) / self._limit.per_second if self._limit.per_second else 3600
            retry_after_ms = math.ceil(wait_s * 1000)
            raise MatrixError(
                "M_LIMIT_EXCEEDED",
                "Too Many Requests",
                extra={"retry_after_ms": retry_after_ms},
                headers={"Retry-After": str(math.ceil(wait_s))},
            )
        if not update:
            return
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > _PRUNE_ABOVE:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._buckets if self._tokens(k, now) >= self._limit.burst_count]
        for key in full:
            del self._buckets[key]


@attrs.frozen
class Ratelimiters:
    """The rate limiters the API uses."""

    message: Ratelimiter
    login: Ratelimiter
    registration: Ratelimiter
    # Issue 12: uploads (POST /upload, PUT /upload/{server}/{id}) per user.
    media_upload: Ratelimiter

    @classmethod
    def from_config(cls, config: RatelimitConfig) -> Ratelimiters:
        """One limiter per action, all on or off together."""
        return cls(
            message=Ratelimiter(config.message, enabled=config.enabled),
            login=Ratelimiter(config.login, enabled=config.enabled),
            registration=Ratelimiter(config.registration, enabled=config.enabled),
            media_upload=Ratelimiter(config.media_upload, enabled=config.enabled),
        )
