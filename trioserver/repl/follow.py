"""Following a writer's streams over one connection, whatever carries it (TCP or Redis).

Theory of operation
-------------------
A `FollowSession` lives as long as one connection (a TCP connection to the writer, or one
Redis subscription). The transport hands it every ``POSITION`` and ``RDATA`` it receives
(`FollowSession.deliver`, synchronous, in order); it never sees the handshake, pings or how the
bytes travelled.

Each followed stream has one task per session that handles that stream's commands in order, so
a stream's catch-up and its live rows never run at once (Synapse's per-stream linearizer),
while other streams and the reading of lines go on. On ``POSITION`` the task catches up from
its own current token to the announced one with ``get_updates`` page by page (the shared
database, or the writer over HTTP for in-memory streams); ``RDATA`` queued behind it is then
applied only if its token is past where the catch-up got, so no row is lost or applied twice;
``RDATA`` before a stream's first ``POSITION`` is dropped (the catch-up covers it). A position
behind ours means the writer's in-memory stream restarted: the stream is ``reset`` to it. Once
every stream has had its ``POSITION`` and caught up, the session calls ``on_caught_up``.

The transport ends the session by cancelling the nursery the tasks run in; an ``apply`` in
progress is finished first (shielded), so no stream is left half-applied.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs

import trio

from trioserver.repl.commands import PositionCommand, RdataCommand
from trioserver.repl.streams import PAGE_SIZE, JsonRow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from trioserver.repl.streams import FollowerStream

__all__ = ["ConnectionLost", "FollowSession"]

logger = logging.getLogger(__name__)


class ConnectionLost(Exception):
    """The transport's connection ended (the message says why); the client reconnects."""


class FollowSession:
    """One connection's following of a writer's streams: a task per stream (see the module
    docstring)."""

    def __init__(
        self,
        streams: Mapping[str, FollowerStream],
        *,
        on_caught_up: Callable[[], None],
        on_applied: Callable[[], None],
    ) -> None:
        """Args:
        on_caught_up: called once every stream has caught up to its first POSITION.
        on_applied: called after rows or a position were applied (waiters look again).
        """
        self._streams = streams
        self._on_caught_up = on_caught_up
        self._on_applied = on_applied
        self._waiting_position = set(streams)
        self._unpositioned = set(streams)
        self.positions_received = 0
        """How many ``POSITION`` lines this session was given."""
        channels = {
            name: trio.open_memory_channel[PositionCommand | RdataCommand](math.inf)
            for name in streams
        }
        self._inbox = {name: send for name, (send, _) in channels.items()}
        self._outbox = {name: receive for name, (_, receive) in channels.items()}

    @property
    def all_positioned(self) -> bool:
        """Whether every stream has been given a POSITION (caught up or not)."""
        return not self._unpositioned

    @property
    def caught_up(self) -> bool:
        """Whether every stream has caught up to its first POSITION of this session."""
        return not self._waiting_position

    def start(self, nursery: trio.Nursery) -> None:
        """Start one task per stream in `nursery` (cancel it to end the session)."""
        for name in self._streams:
            nursery.start_soon(self._follow, name)

    def deliver(self, command: PositionCommand | RdataCommand) -> None:
        """Queue a command for its stream's task (a stream not followed here is ignored)."""
        inbox = self._inbox.get(command.stream_name)
        if inbox is None:
            logger.info("replication: ignoring unknown stream %s", command.stream_name)
            return
        if isinstance(command, PositionCommand):
            self.positions_received += 1
            self._unpositioned.discard(command.stream_name)
        inbox.send_nowait(command)

    async def _follow(self, name: str) -> None:
        """Handle one stream's POSITION and RDATA in order. Checkpoint: yes.

        RDATA that arrived together is applied as one batch, up to the last complete token:
        every event has its own token, and applying (and waking the ``/sync`` waiters) per
        token made a worker answer a burst of N events with N responses of one event each.
        """
        stream = self._streams[name]
        outbox = self._outbox[name]
        partial: list[JsonRow] = []  # rows of a token whose last row has not arrived
        ready = _ReadyRows()
        async for command in outbox:
            while True:
                match command:
                    case PositionCommand():
                        await self._apply_ready(stream, ready)
                        await self._catch_up(stream, command)
                        self._waiting_position.discard(name)
                        if not self._waiting_position:
                            self._on_caught_up()
                    case RdataCommand(token=None, row=row):
                        partial.append(row)
                    case RdataCommand(token=int(token), row=row):
                        rows, partial = [*partial, row], []
                        applied = stream.current_token() if ready.token is None else ready.token
                        if name in self._waiting_position or token <= applied:
                            # Before POSITION the catch-up will cover it; at or before our
                            # token the catch-up already did.
                            logger.debug("replication: dropping %s rows at %s", name, token)
                        else:
                            ready.add(token, rows)
                if len(ready.rows) >= PAGE_SIZE:
                    break
                try:
                    command = outbox.receive_nowait()
                except trio.WouldBlock:
                    break
            await self._apply_ready(stream, ready)

    async def _apply_ready(self, stream: FollowerStream, ready: _ReadyRows) -> None:
        if ready.token is not None:
            token, rows = ready.take()
            await _apply(stream, token, rows)
            self._on_applied()

    async def _catch_up(self, stream: FollowerStream, position: PositionCommand) -> None:
        own, new = stream.current_token(), position.new_token
        if own > new:
            logger.info(
                "replication: %s went back from %s to %s, resetting", stream.name, own, new
            )
            stream.reset(new)
        elif position.prev_token <= own < new:
            # The writer says it wrote nothing in (prev, new]: just stand at new.
            await _apply(stream, new, [])
        while own < new and stream.current_token() < new:
            page = await stream.get_updates(own, new, PAGE_SIZE)
            if page.limited and page.upto_token <= own:
                raise RuntimeError(f"stream {stream.name} returned a page that does not advance")
            await _apply(stream, page.upto_token, [row for _, row in page.updates])
            self._on_applied()
            if not page.limited:
                break
            own = page.upto_token
        self._on_applied()


@attrs.define
class _ReadyRows:
    """Rows of complete tokens received but not applied yet, and the last such token."""

    token: int | None = None
    rows: list[JsonRow] = attrs.Factory(list)

    def add(self, token: int, rows: list[JsonRow]) -> None:
        self.token = token
        self.rows.extend(rows)

    def take(self) -> tuple[int, list[JsonRow]]:
        assert self.token is not None
        taken = self.token, self.rows
        self.token, self.rows = None, []
        return taken


async def _apply(stream: FollowerStream, token: int, rows: list[JsonRow]) -> None:
    # Shielded: a lost connection must not leave a stream half-applied (caches invalidated but
    # the token not moved, or the reverse); applies are local and short.
    with trio.CancelScope(shield=True):
        await stream.apply(token, rows)
