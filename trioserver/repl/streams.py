"""What replication carries: the streams, their pages of rows, and the two sides of each.

Theory of operation
-------------------
Every stream has one writer (main, issue 13) that numbers its rows. The writer side of a
stream (`WriterStream`) says where the stream is now and reads the rows in a token range; the
replication server uses it to turn new positions into ``RDATA`` lines. The follower side
(`FollowerStream`, on every other instance) applies rows as they arrive and can read a range
itself when it has to catch up after ``POSITION`` (seed 3): from the shared database for
streams kept there, from the writer over an internal endpoint for streams kept in memory
(typing).

A page of rows (`UpdatePage`) is what one ``get_updates(from, upto, limit)`` call returns: the
rows with ``from < token <= upto_token`` in token order, at most about `limit` of them (rows
sharing one token are never split), ``upto_token`` cut back to the last row returned when
``limited``. ``get_updates(t, t, n)`` is ``UpdatePage([], t, False)``. Rows are JSON objects
with named fields (STYLE S8); each stream's row class says what they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from trioserver.streams import STREAM_NAMES

JsonRow = dict[str, Any]

# The stream of cache invalidations (rows name a cache and its keys; see `repl.caches`).
CACHES = "caches"
# Every stream replication carries, in the order POSITION lines are sent.
REPLICATED_STREAMS = (*STREAM_NAMES, CACHES)
# Rows per catch-up page (Synapse's figure).
PAGE_SIZE = 100


@attrs.frozen
class UpdatePage:
    """Rows of one stream in ``(from_token, upto_token]``, in token order."""

    updates: Sequence[tuple[int, JsonRow]]
    upto_token: int
    limited: bool


class WriterStream(Protocol):
    """A stream as its writer serves it to the replication server."""

    @property
    def name(self) -> str: ...

    def current_token(self) -> int:
        """The highest committed position."""
        ...

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        """The rows in ``(from_token, upto_token]``. Checkpoint: yes."""
        ...


class FollowerStream(Protocol):
    """A stream as a follower (a worker) applies it."""

    @property
    def name(self) -> str: ...

    def current_token(self) -> int:
        """The position this instance has applied up to."""
        ...

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        """Read rows to catch up with (the database, or the writer over HTTP).

        Checkpoint: yes.
        """
        ...

    async def apply(self, token: int, rows: Sequence[JsonRow]) -> None:
        """Apply rows up to `token` (a page, or the rows of one RDATA token), then stand at it.

        Invalidates caches, updates in-memory copies and wakes the ``/sync`` waiters the rows
        concern. Checkpoint: maybe.
        """
        ...

    def reset(self, token: int) -> None:
        """The writer's position went back (an in-memory stream after a writer restart):
        forget what was applied and stand at `token`."""
        ...
