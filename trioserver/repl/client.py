"""A worker's replication client: follows main's streams over one TCP connection.

Theory of operation
-------------------
The client connects, waits for ``SERVER`` (and checks the name before it says anything, so the
secret never goes to the wrong server), then sends ``NAME``, ``AUTH``, ``PING`` and
``REPLICATE``. Main answers with one ``POSITION`` per stream and then live ``RDATA``.

Each followed stream has one task per connection that handles that stream's commands in order,
so a stream's catch-up and its live rows never run at once (Synapse's per-stream linearizer),
while other streams and the reading of lines go on. On ``POSITION`` the task catches up from
its own current token to the announced one with ``get_updates`` page by page (the shared
database, or main over HTTP for in-memory streams); ``RDATA`` queued behind it is then applied
only if its token is past where the catch-up got, so no row is lost or applied twice. A position
behind ours means main's in-memory stream restarted: the stream is ``reset`` to it.

Once every stream has caught up to its ``POSITION`` the client is *connected*; a lost
connection cancels the catch-ups (an ``apply`` in progress is finished first, shielded) and the
client reconnects with exponential backoff, forever. `wait_for_positions` is how a forwarded
write waits for its own rows (read-your-writes); it fails fast with `ReplicationUnavailable`
when there is no connection, instead of holding the request for its timeout.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs

import trio

from trioserver.errors import MatrixError
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
from trioserver.repl.streams import PAGE_SIZE, JsonRow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trioserver.repl.streams import FollowerStream

__all__ = ["ReplicationClient", "ReplicationUnavailable"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0


class ReplicationUnavailable(MatrixError):
    """This worker has no replication connection to main, so it cannot promise
    read-your-writes; raised by `ReplicationClient.wait_for_positions`."""

    def __init__(self) -> None:
        super().__init__(
            "M_UNKNOWN",
            "this instance has lost its connection to the events writer; try again",
            status=503,
        )


class _ConnectionLost(Exception):
    """The current connection ended; raised inside its nursery to stop it."""


class ReplicationClient:
    """Follows main's streams; see the module docstring."""

    def __init__(
        self,
        streams: Sequence[FollowerStream],
        *,
        host: str,
        port: int,
        secret: str,
        instance_name: str,
        server_name: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 25.0,
        start_timeout_s: float = 10.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._streams = {stream.name: stream for stream in streams}
        self._host = host
        self._port = port
        self._secret = secret
        self._instance_name = instance_name
        self._server_name = server_name
        self._clock_ms = clock_ms
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._start_timeout_s = start_timeout_s
        self._backoff = (backoff_min_s, backoff_max_s)
        self._connected = False
        # Bumped on every connect and disconnect: a waiter that sees it move lost its connection.
        self._generation = 0
        self._changed = trio.Event()
        self._connection_listeners: list[Callable[[bool], None]] = []

    @property
    def connected(self) -> bool:
        """Whether a connection is up and every stream has caught up to its POSITION."""
        return self._connected

    def follows(self, stream: str) -> bool:
        """Whether this client applies `stream`."""
        return stream in self._streams

    def add_connection_listener(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once connected and caught up, ``callback(False)`` when that
        connection is lost. Sync; must not raise."""
        self._connection_listeners.append(callback)

    async def wait_for_positions(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        """Wait until every named stream has applied up to its position.

        Names of streams this client does not follow are ignored.

        Returns:
            True once reached, False if `timeout_s` passed first.

        Raises:
            ReplicationUnavailable: not connected now, or the connection dropped while waiting.

        Checkpoint: yes.
        """
        if not self._connected:
            raise ReplicationUnavailable
        generation = self._generation
        with trio.move_on_after(timeout_s):
            while True:
                if self._generation != generation:
                    raise ReplicationUnavailable
                if all(
                    stream.current_token() >= positions[name]
                    for name, stream in self._streams.items()
                    if name in positions
                ):
                    await trio.lowlevel.checkpoint()
                    return True
                await self._changed.wait()
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow main until cancelled, reconnecting as needed.

        ``task_status.started()`` once the first connection has caught up, or after
        ``start_timeout_s`` without one (it keeps trying). Checkpoint: yes.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_forever)
            with trio.move_on_after(self._start_timeout_s):
                while not self._connected:
                    await self._changed.wait()
            if not self._connected:
                logger.warning(
                    "replication: not connected to %s:%s after %s s; still trying",
                    self._host,
                    self._port,
                    self._start_timeout_s,
                )
            task_status.started()

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        self._generation += 1
        self._notify_changed()
        for callback in self._connection_listeners:
            callback(connected)

    async def _run_forever(self) -> None:
        backoff_min, backoff_max = self._backoff
        backoff = backoff_min
        while True:
            try:
                with trio.fail_after(_CONNECT_TIMEOUT_S):
                    stream = await trio.open_tcp_stream(self._host, self._port)
            except (OSError, trio.TooSlowError) as e:
                logger.info("replication: cannot connect to %s:%s: %s", self._host, self._port, e)
            else:
                was_connected = await self._serve(stream)
                if was_connected:
                    backoff = backoff_min
            await trio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)

    async def _serve(self, stream: trio.SocketStream) -> bool:
        """Run one connection until it ends; whether it got connected. Checkpoint: yes."""
        connection = _Connection(self, stream)
        try:
            async with stream:
                await connection.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, _ConnectionLost):
            logger.info("replication: connection to %s:%s lost", self._host, self._port)
        except* ReplProtocolError as group:
            logger.warning("replication: protocol error from the server: %s", group.exceptions)
        except* Exception:
            # Boundary: one connection (STYLE S4); the next one catches up again.
            logger.exception("replication: connection to %s:%s failed", self._host, self._port)
        finally:
            was_connected = self._connected
            self._set_connected(False)
        return was_connected


class _Connection:
    """One connection's tasks: reading lines, pings, and one task per followed stream."""

    def __init__(self, client: ReplicationClient, stream: trio.SocketStream) -> None:
        self.client = client
        self.stream = stream
        self.conn = ReplConnection("client")
        self._send_lock = trio.Lock()
        self._waiting_position = set(client._streams)
        channels = {name: trio.open_memory_channel[Command](math.inf) for name in client._streams}
        self._inbox = {name: send for name, (send, _) in channels.items()}
        self._outbox = {name: receive for name, (_, receive) in channels.items()}

    async def send(self, *commands: Command) -> None:
        data = b"".join(self.conn.send(c) for c in commands)
        async with self._send_lock:
            with trio.fail_after(self.client._ping_timeout_s):
                await self.stream.send_all(data)

    async def run(self) -> None:
        client = self.client
        first = await self._receive()
        if not isinstance(first, ServerCommand) or first.server_name != client._server_name:
            await self.send(ErrorCommand(f"expected SERVER {client._server_name}"))
            raise _ConnectionLost(f"the server said {first!r}, not SERVER {client._server_name}")
        await self.send(
            NameCommand(client._instance_name),
            AuthCommand(client._secret),
            PingCommand(client._clock_ms()),
            ReplicateCommand(),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping_loop)
            for name in client._streams:
                nursery.start_soon(self._follow, name)
            while True:
                command = await self._receive()
                match command:
                    case PositionCommand(stream_name=name) | RdataCommand(stream_name=name):
                        inbox = self._inbox.get(name)
                        if inbox is None:
                            logger.info("replication: ignoring unknown stream %s", name)
                        else:
                            inbox.send_nowait(command)
                    case ErrorCommand(message=message):
                        logger.warning("replication: the server reports an error: %s", message)
                    case _:
                        pass  # PING (any line resets the timeout); SERVER again is harmless.

    async def _receive(self) -> Command:
        """The next command from the server; raises `_ConnectionLost` on EOF or silence."""
        while True:
            try:
                command = self.conn.next_command()
            except ReplProtocolError as e:
                await self.send(ErrorCommand(str(e)))
                raise
            if command is CLOSED:
                raise _ConnectionLost("the server closed the connection")
            if command is not NEED_DATA:
                return command
            with trio.move_on_after(self.client._ping_timeout_s) as scope:
                data = await self.stream.receive_some(65536)
            if scope.cancelled_caught:
                raise _ConnectionLost(f"no line from the server for {scope.deadline}")
            self.conn.receive_data(data)

    async def _ping_loop(self) -> None:
        while True:
            await trio.sleep(self.client._ping_interval_s)
            await self.send(PingCommand(self.client._clock_ms()))

    async def _follow(self, name: str) -> None:
        """Handle one stream's POSITION and RDATA in order. Checkpoint: yes.

        RDATA that arrived together is applied as one batch, up to the last complete token:
        every event has its own token, and applying (and waking the ``/sync`` waiters) per
        token made a worker answer a burst of N events with N responses of one event each.
        """
        stream = self.client._streams[name]
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
                            self.client._set_connected(True)
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
            self.client._notify_changed()

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
            self.client._notify_changed()
            if not page.limited:
                break
            own = page.upto_token
        self.client._notify_changed()


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


class FollowedWriters:
    """An instance's replication clients, one per writer instance it follows, as one: main
    for most streams, and the events writer when that is another instance (issue 13)."""

    def __init__(self, clients: Sequence[ReplicationClient]) -> None:
        self.clients = tuple(clients)

    @property
    def connected(self) -> bool:
        """Whether every client is connected and caught up."""
        return all(client.connected for client in self.clients)

    async def wait_for_positions(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        """`ReplicationClient.wait_for_positions` over every client that follows one of the
        named streams, within one `timeout_s`. Checkpoint: yes.

        Raises:
            ReplicationUnavailable: such a client is not connected, or its connection dropped.
        """
        deadline = trio.current_time() + timeout_s
        for client in self.clients:
            wanted = {name: token for name, token in positions.items() if client.follows(name)}
            if not wanted:
                continue
            left = max(0.0, deadline - trio.current_time())
            if not await client.wait_for_positions(wanted, left):
                return False
        await trio.lowlevel.checkpoint()
        return True
