"""A follower's replication client: follows one writer's streams, reconnecting forever.

Theory of operation
-------------------
`ReplicationClient` connects through its *link* (`ReplicationLink`: `TcpLink` here, to the
writer's TCP listener; `redis_link.RedisLink` over Redis pub/sub, issue 14) and runs one
`follow.FollowSession` per connection: the link does the handshake, asks for the positions
(``REPLICATE``) and hands the session every ``POSITION`` and ``RDATA``; the session catches up
from the database and applies the live rows (see `follow`). So both transports share the
catch-up, the batching and the read-your-writes bookkeeping, and differ only in how lines
travel.

Once every stream has caught up to its ``POSITION`` the client is *connected*; a lost
connection ends the session and the client reconnects with exponential backoff, forever.
`wait_for_positions` is how a forwarded write waits for its own rows (read-your-writes); it
fails fast with `ReplicationUnavailable` when there is no connection, instead of holding the
request for its timeout.

Over TCP (`TcpLink`) the client waits for ``SERVER`` (and checks the name before it says
anything, so the secret never goes to the wrong server), then sends ``NAME``, ``AUTH``, ``PING``
and ``REPLICATE``; main answers with one ``POSITION`` per stream and then live ``RDATA``. Both
sides ping every 5 s and a connection silent for 25 s is dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

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
from trioserver.repl.follow import ConnectionLost, FollowSession

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trioserver.repl.streams import FollowerStream

__all__ = [
    "FollowedWriters",
    "ReplicationClient",
    "ReplicationLink",
    "ReplicationUnavailable",
    "TcpLink",
]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0


class ReplicationUnavailable(MatrixError):
    """This instance has no replication connection to a writer, so it cannot promise
    read-your-writes; raised by `ReplicationClient.wait_for_positions`."""

    def __init__(self) -> None:
        super().__init__(
            "M_UNKNOWN",
            "this instance has lost its connection to the events writer; try again",
            status=503,
        )


class ReplicationLink(Protocol):
    """How a `ReplicationClient` reaches its writer (TCP, Redis)."""

    def describe(self) -> str:
        """Where the writer is reached, for logs."""
        ...

    async def run(self, session: FollowSession) -> None:
        """Connect, hand `session` the writer's POSITION and RDATA until the connection ends,
        and raise `ConnectionLost` (or another error) saying why. Checkpoint: yes."""
        ...


class ReplicationClient:
    """Follows one writer's streams through `link`; see the module docstring."""

    def __init__(
        self,
        streams: Sequence[FollowerStream],
        link: ReplicationLink,
        *,
        start_timeout_s: float = 10.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._streams = {stream.name: stream for stream in streams}
        self._link = link
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
        """Follow the writer until cancelled, reconnecting as needed.

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
                    "replication: not connected to %s after %s s; still trying",
                    self._link.describe(),
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
            if await self._serve():
                backoff = backoff_min
            await trio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)

    async def _serve(self) -> bool:
        """Run one connection until it ends; whether it got connected. Checkpoint: yes."""
        session = FollowSession(
            self._streams,
            on_caught_up=lambda: self._set_connected(True),
            on_applied=self._notify_changed,
        )
        where = self._link.describe()
        try:
            await self._link.run(session)
        except* ConnectionLost as group:
            reasons = "; ".join(str(e) for e in group.exceptions)
            logger.info("replication: connection to %s lost: %s", where, reasons)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.info("replication: connection to %s lost", where)
        except* ReplProtocolError as group:
            logger.warning("replication: protocol error from %s: %s", where, group.exceptions)
        except* Exception:
            # Boundary: one connection (STYLE S4); the next one catches up again.
            logger.exception("replication: connection to %s failed", where)
        finally:
            was_connected = self._connected
            self._set_connected(False)
        return was_connected


class TcpLink:
    """A `ReplicationLink` to a writer's TCP replication listener (`server.ReplicationServer`)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        secret: str,
        instance_name: str,
        server_name: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 25.0,
    ) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.instance_name = instance_name
        self.server_name = server_name
        self.clock_ms = clock_ms
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    async def run(self, session: FollowSession) -> None:
        try:
            with trio.fail_after(_CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as e:
            raise ConnectionLost(f"cannot connect: {e or type(e).__name__}") from None
        async with stream:
            await _TcpConnection(self, stream, session).run()


class _TcpConnection:
    """One TCP connection's tasks: the handshake, reading lines, pings."""

    def __init__(self, link: TcpLink, stream: trio.SocketStream, session: FollowSession) -> None:
        self.link = link
        self.stream = stream
        self.session = session
        self.conn = ReplConnection("client")
        self._send_lock = trio.Lock()

    async def send(self, *commands: Command) -> None:
        data = b"".join(self.conn.send(c) for c in commands)
        async with self._send_lock:
            with trio.fail_after(self.link.ping_timeout_s):
                await self.stream.send_all(data)

    async def run(self) -> None:
        link = self.link
        first = await self._receive()
        if not isinstance(first, ServerCommand) or first.server_name != link.server_name:
            await self.send(ErrorCommand(f"expected SERVER {link.server_name}"))
            raise ConnectionLost(f"the server said {first!r}, not SERVER {link.server_name}")
        await self.send(
            NameCommand(link.instance_name),
            AuthCommand(link.secret),
            PingCommand(link.clock_ms()),
            ReplicateCommand(),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping_loop)
            self.session.start(nursery)
            while True:
                command = await self._receive()
                match command:
                    case PositionCommand() | RdataCommand():
                        self.session.deliver(command)
                    case ErrorCommand(message=message):
                        logger.warning("replication: the server reports an error: %s", message)
                    case _:
                        pass  # PING (any line resets the timeout); SERVER again is harmless.

    async def _receive(self) -> Command:
        """The next command from the server; raises `ConnectionLost` on EOF or silence."""
        while True:
            try:
                command = self.conn.next_command()
            except ReplProtocolError as e:
                await self.send(ErrorCommand(str(e)))
                raise
            if command is CLOSED:
                raise ConnectionLost("the server closed the connection")
            if command is not NEED_DATA:
                return command
            with trio.move_on_after(self.link.ping_timeout_s) as scope:
                data = await self.stream.receive_some(65536)
            if scope.cancelled_caught:
                raise ConnectionLost(f"no line from the server for {self.link.ping_timeout_s} s")
            self.conn.receive_data(data)

    async def _ping_loop(self) -> None:
        while True:
            await trio.sleep(self.link.ping_interval_s)
            await self.send(PingCommand(self.link.clock_ms()))


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
