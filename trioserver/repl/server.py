"""The replication listener on main: sends every stream's new rows to the connected workers.

Theory of operation
-------------------
Each connection gets ``SERVER`` and ``PING`` at once. The client must send a correct ``AUTH``
(within ``auth_timeout_s``) before anything but ``NAME``/``PING``/``AUTH``; on ``REPLICATE``
it gets one ``POSITION`` per stream at the token the streamer last published, and joins the
set of replicating peers.

One streamer task publishes: when poked (`ReplicationServer.poke`, wired to every
`Notifier.notify`), and once a second as a safety net, it reads each stream's rows after the last
published token page by page and queues them as ``RDATA`` to every replicating peer (and a
``POSITION`` when the stream moved past its last row without a row of its own). Queueing
is synchronous and the published token advances in the same step, and a ``POSITION`` is queued
in one step with joining the set; so every row after a peer's ``POSITION`` reaches it exactly
once, and the rows before it come from the client's own catch-up. With no replicating peer the
streamer only advances the token (nobody would read the rows).

Each peer has its own outgoing buffer written by its own task, so a slow worker never holds up
the others: past ``max_buffered`` queued bytes it gets ``ERROR Failed to keep up`` and is closed
(it reconnects and catches up from the database). Protocol errors close only their connection;
the per-connection handler is the boundary where errors are logged (STYLE S4).
"""

from __future__ import annotations

import hmac
import logging
import math
from functools import partial
from typing import TYPE_CHECKING

import attrs

import trio

from trioserver.repl.commands import (
    AuthCommand,
    Command,
    ErrorCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
    wall_clock_ms,
)
from trioserver.repl.connection import CLOSED, NEED_DATA, ReplConnection
from trioserver.repl.streams import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.repl.streams import UpdatePage, WriterStream

__all__ = ["ReplicationServer", "ReplicationServerStatistics"]

logger = logging.getLogger(__name__)

# How long a closing peer may take to read its last lines (the ERROR) before it is cut off.
_CLOSE_GRACE_S = 5.0
# The streamer looks at the streams this often even without a poke: a writer that forgot to
# notify delays its rows by at most this much instead of forever (Synapse: 1 s loop).
_SAFETY_POKE_S = 1.0
# After a failed read of a stream, the streamer tries again this much later.
_RETRY_S = 1.0


@attrs.frozen
class ReplicationServerStatistics:
    """What `ReplicationServer.statistics` reports."""

    connections: int
    """Open connections, replicating or not."""
    replicating: int
    """Connections that sent REPLICATE and are being sent rows (not closing)."""


class _Peer:
    """One connection: its protocol state and outgoing buffer."""

    def __init__(self, stream: trio.SocketStream, max_buffered: int) -> None:
        self.stream = stream
        self.conn = ReplConnection("server")
        self.name = "?"
        self.authed = False
        self.seen_ping = False
        self.closing = False
        self._max_buffered = max_buffered
        self._out: list[bytes] = []
        self._queued = 0
        self._wakeup = trio.Event()
        self._write_scope = trio.CancelScope()

    def send_nowait(self, command: Command) -> None:
        """Queue one command (see `send_bytes_nowait`)."""
        self.send_bytes_nowait(self.conn.send(command))

    def send_bytes_nowait(self, data: bytes) -> None:
        """Queue the bytes of whole lines; past the buffer limit, close with ``Failed to keep
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
        """Send `error` (if any) after what is queued, then close (within a grace period)."""
        if self.closing:
            return
        if error is not None:
            self._out.append(self.conn.send(error))
        self.closing = True
        self._wakeup.set()
        self._write_scope.deadline = min(
            self._write_scope.deadline, trio.current_time() + _CLOSE_GRACE_S
        )

    async def write_loop(self) -> None:
        """Write the queued bytes until `finish` and the queue is drained. Checkpoint: yes."""
        with self._write_scope:
            while True:
                if not self._out:
                    if self.closing:
                        return
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                data = b"".join(self._out)
                self._out.clear()
                self._queued = 0
                await self.stream.send_all(data)


class ReplicationServer:
    """Main's replication listener over the given writer streams."""

    def __init__(
        self,
        streams: Sequence[WriterStream],
        *,
        server_name: str,
        instance_name: str,
        secret: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_buffered: int = 8 * 1024 * 1024,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 25.0,
        auth_timeout_s: float = 25.0,
    ) -> None:
        self._streams = list(streams)
        self._server_name = server_name
        self._instance_name = instance_name
        self._secret = secret.encode()
        self._clock_ms = clock_ms
        self._max_buffered = max_buffered
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._auth_timeout_s = auth_timeout_s
        self._published: dict[str, int] = {}
        self._peers: set[_Peer] = set()
        self._replicating: set[_Peer] = set()
        self._disconnect_listeners: list[Callable[[str], None]] = []
        self._poked = trio.Event()
        # Renders each RDATA line once for every peer (the direction and length checks are the
        # same for all of them).
        self._wire = ReplConnection("server")

    def add_disconnect_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(instance_name)` when an authenticated connection closes (main ends
        that instance's presence syncs: its /sync requests can no longer report their end)."""
        self._disconnect_listeners.append(callback)

    def poke(self) -> None:
        """Some stream may have advanced: let the streamer look. Sync and cheap."""
        self._poked.set()

    def statistics(self) -> ReplicationServerStatistics:
        """How many connections there are (for tests and metrics)."""
        return ReplicationServerStatistics(
            connections=len(self._peers),
            replicating=sum(not peer.closing for peer in self._replicating),
        )

    def published_token(self, stream_name: str) -> int:
        """The token up to which `stream_name`'s rows have been sent (for tests and metrics)."""
        return self._published[stream_name]

    async def run(
        self, bind: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on `bind`:`port` (0: any free port) and stream until cancelled.

        ``task_status.started(bound_port)`` once listening. Checkpoint: yes.
        """
        for stream in self._streams:
            self._published[stream.name] = stream.current_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_streamer)
            listeners = await nursery.start(partial(trio.serve_tcp, self._handle, port, host=bind))
            task_status.started(listeners[0].socket.getsockname()[1])

    async def _run_streamer(self) -> None:
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
            if not self._replicating:
                self._published[stream.name] = current
                return
            page = await stream.get_updates(last, current, PAGE_SIZE)
            if page.upto_token <= last:
                raise RuntimeError(f"stream {stream.name} returned a page that does not advance")
            # No checkpoint from here to the token update: a peer joining sees all or none.
            self._send_page(stream.name, page)
            last_row = page.updates[-1][0] if page.updates else last
            if page.upto_token > last_row:
                # The stream moved past its last row (a position with no row to send): say so,
                # or a follower would stand at last_row and a read-your-writes wait for
                # upto_token would never end. prev=last_row means "nothing in between".
                position = PositionCommand(
                    stream.name, self._instance_name, last_row, page.upto_token
                )
                for peer in list(self._replicating):
                    peer.send_nowait(position)
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
                data = self._wire.send(command)
            except ReplProtocolError as e:
                # A row too long for a line: the peers can only get it from the database,
                # which their catch-up after reconnecting does.
                logger.warning("replication: cannot send a %s row: %s", stream_name, e)
                for peer in list(self._replicating):
                    peer.finish(ErrorCommand("a row is too long for a line; catch up"))
                continue
            for peer in list(self._replicating):
                peer.send_bytes_nowait(data)

    async def _handle(self, stream: trio.SocketStream) -> None:
        peer = _Peer(stream, self._max_buffered)
        self._peers.add(peer)
        try:
            peer.send_nowait(ServerCommand(self._server_name))
            peer.send_nowait(PingCommand(self._clock_ms()))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, peer)
                nursery.start_soon(self._ping_loop, peer)
                nursery.start_soon(self._auth_deadline, peer)
                await peer.write_loop()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.info("replication: connection from %s lost", peer.name)
        except* Exception:
            # Boundary: one connection (STYLE S4).
            logger.exception("replication: connection from %s failed", peer.name)
        finally:
            self._peers.discard(peer)
            self._replicating.discard(peer)
            if peer.authed:
                for listener in self._disconnect_listeners:
                    listener(peer.name)

    async def _auth_deadline(self, peer: _Peer) -> None:
        # The listener is reachable by anyone who can reach the port: a connection that never
        # authenticates must not be held open forever (the ping timeout starts only with the
        # peer's first PING, so it would not close it).
        await trio.sleep(self._auth_timeout_s)
        if not peer.authed:
            peer.finish(ErrorCommand("no AUTH in time"))

    async def _ping_loop(self, peer: _Peer) -> None:
        while True:
            await trio.sleep(self._ping_interval_s)
            peer.send_nowait(PingCommand(self._clock_ms()))

    async def _read_loop(self, peer: _Peer) -> None:
        try:
            while not peer.closing:
                # Timeouts start with the peer's first PING, so a netcat session stays open.
                timeout = self._ping_timeout_s if peer.seen_ping else math.inf
                with trio.move_on_after(timeout) as scope:
                    data = await peer.stream.receive_some(65536)
                if scope.cancelled_caught:
                    logger.info("replication: %s silent for %s s", peer.name, timeout)
                    peer.finish(ErrorCommand("ping time out"))
                    return
                peer.conn.receive_data(data)
                while not peer.closing:
                    command = peer.conn.next_command()
                    if command is NEED_DATA:
                        break
                    if command is CLOSED:
                        peer.finish()
                        return
                    self._on_command(peer, command)
        except ReplProtocolError as e:
            logger.info("replication: protocol error from %s: %s", peer.name, e)
            peer.finish(ErrorCommand(str(e)))
        finally:
            peer.finish()

    def _on_command(self, peer: _Peer, command: Command) -> None:
        match command:
            case NameCommand(instance_name=name):
                peer.name = name
            case PingCommand():
                peer.seen_ping = True
            case AuthCommand(secret=secret):
                if hmac.compare_digest(secret.encode(), self._secret):
                    peer.authed = True
                else:
                    logger.warning("replication: %s sent a wrong secret", peer.name)
                    peer.finish(ErrorCommand("wrong secret"))
            case _ if not peer.authed:
                peer.finish(ErrorCommand(f"{command.NAME} before AUTH"))
            case ReplicateCommand():
                for stream in self._streams:
                    token = self._published[stream.name]
                    peer.send_nowait(
                        PositionCommand(stream.name, self._instance_name, token, token)
                    )
                self._replicating.add(peer)
            case ErrorCommand(message=message):
                logger.warning("replication: %s reports an error: %s", peer.name, message)
            case _:
                # ReplConnection refuses the verbs only a server may send.
                raise AssertionError(f"unexpected command {command.NAME}")
