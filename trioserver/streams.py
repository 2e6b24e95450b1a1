"""Streams and sync tokens.

Theory of operation
-------------------
Everything `/sync` carries comes from a *stream*: an append-only sequence of changes numbered by
an increasing integer. Each stream has exactly one writer, which allocates the numbers in memory
(`StreamIdGenerator`, initialised from the stream table's maximum at start) inside the
transaction that writes the rows, so numbers are committed in order and readers never see a
hole. A sync token is the position of every stream at once (`StreamToken`); a client's `since`
says what it has seen, and a sync answers with everything between `since` and the current
positions.

The typing stream is kept in memory only (as in Synapse); after a restart it starts again from
zero, so a `since` that is ahead of the current typing position is treated as "before anything".
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

STREAM_NAMES = (
    "events",
    "typing",
    "receipts",
    "account_data",
    "presence",
    "to_device",
    "device_lists",
)


@attrs.frozen
class StreamToken:
    """A position in every stream; the opaque ``next_batch``/``since`` token of ``/sync``."""

    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    presence: int = 0
    to_device: int = 0
    device_lists: int = 0

    def to_string(self) -> str:
        """E.g. ``s41_3_7_2_0_5_1``; clients treat it as opaque."""
        return "s" + "_".join(str(getattr(self, name)) for name in STREAM_NAMES)

    @classmethod
    def parse(cls, token: str) -> StreamToken:
        """Parse a token made by `to_string`.

        Raises:
            ValueError: not a token of ours.
        """
        parts = token[1:].split("_") if token.startswith("s") else []
        if len(parts) != len(STREAM_NAMES) or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError(f"invalid stream token {token!r}")
        values = [int(p) for p in parts]
        if any(v >= 2**63 for v in values):
            raise ValueError(f"invalid stream token {token!r}")
        return cls(*values)

    def advanced_past(self, other: StreamToken) -> bool:
        """Whether any stream is ahead of `other`."""
        return any(getattr(self, n) > getattr(other, n) for n in STREAM_NAMES)


class NotStreamWriter(RuntimeError):
    """Raised when an instance that only follows a stream (a worker, issue 13) is asked to
    write to it: its requests that write are forwarded to the writer instead, so reaching a
    write method is a wiring bug. Raised before anything touches the database."""


class StreamIdGenerator:
    """Allocates one stream's positions on its writer.

    `next_id` is only called inside the writer's (serialised) write transactions, so ids are
    committed in allocation order; `current` is the highest committed id once the transaction
    that took it has returned.

    On a follower (``writer=False``) nothing is allocated: `next_id` raises
    `NotStreamWriter`, and `current` is what replication has applied (`advance`).
    """

    def __init__(self, current: int, *, writer: bool = True) -> None:
        self._current = current
        # What readers may see: raised only once the transactions that took the ids have
        # finished (`mark_committed`); `next_id` runs in the writer's thread before COMMIT, and
        # a reader that saw an id before its row committed would skip that row for good.
        self._committed = current
        self._writer = writer

    def check_writer(self, stream: str) -> None:
        """Raise `NotStreamWriter` unless this instance writes `stream`."""
        if not self._writer:
            raise NotStreamWriter(f"this instance does not write the {stream} stream")

    def next_id(self) -> int:
        """The next position (call inside the transaction that writes it).

        Raises:
            NotStreamWriter: on a follower.
        """
        self.check_writer("this")
        self._current += 1
        return self._current

    def mark_committed(self) -> None:
        """Every write transaction that took ids has finished (committed or rolled back: an
        id of a rolled-back one is a hole, which readers never miss). Call after each write
        transaction (`Database.add_commit_hook`)."""
        self._committed = self._current

    def advance(self, token: int) -> None:
        """A follower applied rows up to `token` (never goes back)."""
        self._current = max(self._current, token)
        self._committed = self._current

    @property
    def current(self) -> int:
        """The highest committed position (see `mark_committed`)."""
        return self._committed


PositionSource = Callable[[], int]


class StreamPositions:
    """Where each stream is now: one callable per stream, registered by its writer."""

    def __init__(self) -> None:
        self._sources: dict[str, PositionSource] = {}

    def register(self, stream: str, source: PositionSource) -> None:
        """Name the callable that reports `stream`'s current position."""
        if stream not in STREAM_NAMES:
            raise ValueError(f"unknown stream {stream!r}")
        self._sources[stream] = source

    def current_token(self) -> StreamToken:
        """The current position of every stream (0 for streams without a writer yet)."""
        return StreamToken(**{name: source() for name, source in self._sources.items()})
