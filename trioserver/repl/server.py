"""The TCP replication listener of a writer (main): each worker connects to it.

Theory of operation
-------------------
Each connection gets ``SERVER`` and ``PING`` at once. The client must send a correct ``AUTH``
(within ``auth_timeout_s``) before anything but ``NAME``/``PING``/``AUTH``; on ``REPLICATE``
its outbox joins the `streamer.Streamer` (one ``POSITION`` per stream at the token last
published, then every new row as ``RDATA``).

Each peer has its own `streamer.Outbox` written to its socket by its own task, so a slow worker
never holds up the others: past ``max_buffered`` queued bytes it gets ``ERROR Failed to keep up``
and is closed (it reconnects and catches up from the database). Protocol errors close only their
connection; the per-connection handler is the boundary where errors are logged (STYLE S4).
Replication over Redis (`redis_server`) shares the streamer and replaces this listener.
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
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
    wall_clock_ms,
)
from trioserver.repl.connection import CLOSED, NEED_DATA, ReplConnection
from trioserver.repl.streamer import Outbox, Streamer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.repl.streams import WriterStream

__all__ = ["ReplicationServer", "ReplicationServerStatistics"]

logger = logging.getLogger(__name__)


@attrs.frozen
class ReplicationServerStatistics:
    """What `ReplicationServer.statistics` reports."""

    connections: int
    """Open connections, replicating or not."""
    replicating: int
    """Connections that sent REPLICATE and are being sent rows (not closing)."""


class _Peer(Outbox):
    """One connection: its protocol state and its outbox."""

    def __init__(self, stream: trio.SocketStream, max_buffered: int) -> None:
        super().__init__("?", max_buffered)
        self.stream = stream
        self.conn = ReplConnection("server")
        self.authed = False
        self.seen_ping = False


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
        self._streamer = Streamer(streams, instance_name=instance_name)
        self._server_name = server_name
        self._secret = secret.encode()
        self._clock_ms = clock_ms
        self._max_buffered = max_buffered
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._auth_timeout_s = auth_timeout_s
        self._peers: set[_Peer] = set()
        self._disconnect_listeners: list[Callable[[str], None]] = []

    def add_disconnect_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(instance_name)` when an authenticated connection closes (main ends
        that instance's presence syncs: its /sync requests can no longer report their end)."""
        self._disconnect_listeners.append(callback)

    def poke(self) -> None:
        """Some stream may have advanced: let the streamer look. Sync and cheap."""
        self._streamer.poke()

    def statistics(self) -> ReplicationServerStatistics:
        """How many connections there are (for tests and metrics)."""
        return ReplicationServerStatistics(
            connections=len(self._peers),
            replicating=sum(not peer.closing for peer in self._streamer.outboxes),
        )

    def published_token(self, stream_name: str) -> int:
        """The token up to which `stream_name`'s rows have been sent (for tests and metrics)."""
        return self._streamer.published_token(stream_name)

    async def run(
        self, bind: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on `bind`:`port` (0: any free port) and stream until cancelled.

        ``task_status.started(bound_port)`` once listening. Checkpoint: yes.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._streamer.run)
            listeners = await nursery.start(partial(trio.serve_tcp, self._handle, port, host=bind))
            task_status.started(listeners[0].socket.getsockname()[1])

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
                await peer.write_loop(stream.send_all)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.info("replication: connection from %s lost", peer.name)
        except* Exception:
            # Boundary: one connection (STYLE S4).
            logger.exception("replication: connection from %s failed", peer.name)
        finally:
            self._peers.discard(peer)
            self._streamer.leave(peer)
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
                self._streamer.join(peer)
            case ErrorCommand(message=message):
                logger.warning("replication: %s reports an error: %s", peer.name, message)
            case _:
                # ReplConnection refuses the verbs only a server may send.
                raise AssertionError(f"unexpected command {command.NAME}")
