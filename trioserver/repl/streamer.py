"""A writer's side of replication, whatever carries it: the streamer and its outboxes.

Theory of operation
-------------------
`Streamer` turns stream advances into lines. When poked (wired to every `Notifier.notify`), and
once a second as a safety net, it reads each stream's rows after the token it last published,
page by page, and queues them as ``RDATA`` in every joined `Outbox` (and a ``POSITION`` when
the stream moved past its last row without a row of its own). Queueing is synchronous and the
published token advances in the same step, and `Streamer.join` queues one ``POSITION`` per
stream in one step with joining; so every row after an outbox's ``POSITION`` reaches it exactly
once, and the rows before it come from the follower's own catch-up (SEED-SPEC seed 3: never a
backlog). With no outbox joined the streamer only advances the tokens (nobody would read the
rows).

An `Outbox` holds whole lines for one destination and is written by one task
(`Outbox.write_loop`), so a slow destination never holds up the others: past ``max_buffered``
queued bytes it is finished with ``ERROR Failed to keep up`` (its followers reconnect and catch
up from the database). The transports differ only in what an outbox is: one TCP connection
per worker (`server.ReplicationServer`), or one Redis channel heard by every follower
(`redis_server.RedisReplicationServer`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from trioserver.repl.commands import (
    Command,
    ErrorCommand,
    PositionCommand,
    RdataCommand,
    ReplProtocolError,
)
from trioserver.repl.connection import ReplConnection
from trioserver.repl.streams import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from trioserver.repl.streams import UpdatePage, WriterStream

__all__ = ["Outbox", "Streamer"]

logger = logging.getLogger(__name__)

# How long a closing outbox may take to write its last lines (the ERROR) before it is cut off.
_CLOSE_GRACE_S = 5.0
# The streamer looks at the streams this often even without a poke: a writer that forgot to
# notify delays its rows by at most this much instead of forever (Synapse: 1 s loop).
_SAFETY_POKE_S = 1.0
# After a failed read of a stream, the streamer tries again this much later.
_RETRY_S = 1.0

# Renders lines for every outbox (the direction and length checks are the same for all).
_WIRE = ReplConnection("server")


class Outbox:
    """Whole lines queued for one destination (`name`, for logs), written by `write_loop`."""

    def __init__(self, name: str, max_buffered: int, *, max_chunk: float = math.inf) -> None:
        self.name = name
        self.closing = False
        self._max_buffered = max_buffered
        self._max_chunk = max_chunk
        self._out: list[bytes] = []
        self._queued = 0
        self._wakeup = trio.Event()
        self._write_scope = trio.CancelScope()

    def send_nowait(self, command: Command) -> None:
        """Queue one command (see `send_bytes_nowait`)."""
        self.send_bytes_nowait(_WIRE.send(command))

    def send_bytes_nowait(self, data: bytes) -> None:
        """Queue the bytes of whole lines; past the buffer limit, finish with ``Failed to keep
        up`` instead."""
        if self.closing:
            return
        self._queued += len(data)
        if self._queued > self._max_buffered:
            logger.warning("replication: %s is too slow, closing its connection", self.name)
            self._out.clear()
            self.finish(ErrorCommand("Failed to keep up"))
            return
        self._out.append(data)
        self._wakeup.set()

    def finish(self, error: ErrorCommand | None = None) -> None:
        """Send `error` (if any) after what is queued, then stop (within a grace period)."""
        if self.closing:
            return
        if error is not None:
            self._out.append(_WIRE.send(error))
        self.closing = True
        self._wakeup.set()
        self._write_scope.deadline = min(
            self._write_scope.deadline, trio.current_time() + _CLOSE_GRACE_S
        )

    async def write_loop(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand the queued lines to `write`, at most ``max_chunk`` bytes at a time (unless one
        line is longer), until `finish` and the queue is drained. Checkpoint: yes."""
        with self._write_scope:
            while True:
                if not self._out:
                    if self.closing:
                        return
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                taken, size = 0, 0
                while taken < len(self._out) and (not taken or size < self._max_chunk):
                    size += len(self._out[taken])
                    taken += 1
                data = b"".join(self._out[:taken])
                del self._out[:taken]
                self._queued -= size
                await write(data)


class Streamer:
    """Publishes the rows of a writer's streams to the joined outboxes."""

    def __init__(self, streams: Sequence[WriterStream], *, instance_name: str) -> None:
        self._streams = list(streams)
        self._instance_name = instance_name
        self._published: dict[str, int] = {}
        self._poked = trio.Event()
        self.outboxes: set[Outbox] = set()
        """The joined outboxes, each sent every row."""

    def poke(self) -> None:
        """Some stream may have advanced: look. Sync and cheap."""
        self._poked.set()

    def published_token(self, stream_name: str) -> int:
        """The token up to which `stream_name`'s rows have been sent."""
        return self._published[stream_name]

    def positions(self) -> list[PositionCommand]:
        """A ``POSITION`` of every stream at its published token (the answer to
        ``REPLICATE``)."""
        return [
            PositionCommand(stream.name, self._instance_name, token, token)
            for stream in self._streams
            for token in (self._published[stream.name],)
        ]

    def join(self, outbox: Outbox) -> None:
        """Queue every stream's ``POSITION`` in `outbox`, and every row after it from now on."""
        for position in self.positions():
            outbox.send_nowait(position)
        self.outboxes.add(outbox)

    def leave(self, outbox: Outbox) -> None:
        """Send `outbox` nothing more."""
        self.outboxes.discard(outbox)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start at every stream's current token, then publish until cancelled.

        ``task_status.started()`` once the tokens are read. Checkpoint: yes.
        """
        for stream in self._streams:
            self._published[stream.name] = stream.current_token()
        task_status.started()
        while True:
            with trio.move_on_after(_SAFETY_POKE_S):
                await self._poked.wait()
            self._poked = trio.Event()
            for stream in self._streams:
                try:
                    await self._publish(stream)
                except* Exception:
                    # Boundary: a failed read (the database) must not stop replication of
                    # every stream; the token has not advanced, so the rows go out on retry.
                    logger.exception("replication: reading stream %s failed", stream.name)
                    await trio.sleep(_RETRY_S)
                    self.poke()

    async def _publish(self, stream: WriterStream) -> None:
        current = stream.current_token()
        while self._published[stream.name] < current:
            last = self._published[stream.name]
            if not self.outboxes:
                self._published[stream.name] = current
                return
            page = await stream.get_updates(last, current, PAGE_SIZE)
            if page.upto_token <= last:
                raise RuntimeError(f"stream {stream.name} returned a page that does not advance")
            # No checkpoint from here to the token update: an outbox joining sees all or none.
            self._send_page(stream.name, page)
            last_row = page.updates[-1][0] if page.updates else last
            if page.upto_token > last_row:
                # The stream moved past its last row (a position with no row to send): say so,
                # or a follower would stand at last_row and a read-your-writes wait for
                # upto_token would never end. prev=last_row means "nothing in between".
                position = PositionCommand(
                    stream.name, self._instance_name, last_row, page.upto_token
                )
                for outbox in list(self.outboxes):
                    outbox.send_nowait(position)
            self._published[stream.name] = page.upto_token

    def _send_page(self, stream_name: str, page: UpdatePage) -> None:
        updates = page.updates
        for i, (token, row) in enumerate(updates):
            # Rows sharing a token: all but the last go out as ``batch`` (seed 3).
            last_of_token = i + 1 == len(updates) or updates[i + 1][0] != token
            command = RdataCommand(
                stream_name, self._instance_name, token if last_of_token else None, row
            )
            try:
                data = _WIRE.send(command)
            except ReplProtocolError as e:
                # A row too long for a line: the followers can only get it from the database,
                # which their catch-up after reconnecting does.
                logger.warning("replication: cannot send a %s row: %s", stream_name, e)
                for outbox in list(self.outboxes):
                    outbox.finish(ErrorCommand("a row is too long for a line; catch up"))
                continue
            for outbox in list(self.outboxes):
                outbox.send_bytes_nowait(data)
