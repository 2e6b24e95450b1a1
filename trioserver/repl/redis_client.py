"""A small Redis client on trio sockets: commands on one connection, messages on another.

Theory of operation
-------------------
There is no trio Redis client, and replication needs little of one (issue 14): `open_redis`
connects, logs in (``AUTH`` from the URL's password, ``SELECT`` its database) and names the
connection (``CLIENT SETNAME``, so ``CLIENT LIST`` shows which instance holds it). Then
`RedisConnection.command` sends one command and reads its reply, one command at a time per
connection (a lock keeps concurrent callers' replies apart); the writer of a stream publishes
that way. A connection handed to `RedisSubscriber` is in subscribed mode, where Redis pushes
``message`` arrays at any time: `RedisSubscriber.next_message` returns them, skipping the
confirmations of ``SUBSCRIBE`` and the replies to the ``PING`` that
`RedisSubscriber.keep_alive` sends, which notices a Redis that stopped answering (a cut
network closes nothing) within its timeout.

Parsing is `resp.RespParser` (hiredis). Every failure is a `RedisError`: a refused or lost
connection, a silent Redis (`RedisConnectionError`), an error reply such as a wrong password
(`RedisReplyError`), or a reply of an unexpected shape (`RedisProtocolError`). Nothing here
retries: callers reconnect with backoff and catch up, since Redis keeps no message for a
subscriber that was away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import trio

from trioserver.repl.resp import (
    NEED_DATA,
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    RespParser,
    encode_command,
)

if TYPE_CHECKING:
    from types import TracebackType

    from trioserver.repl.resp import RedisAddress

__all__ = ["RedisConnection", "RedisSubscriber", "open_redis"]

# How long connecting, and each command's reply, may take.
DEFAULT_TIMEOUT_S = 10.0
_READ_SIZE = 65536


class RedisConnection:
    """One connection to Redis (from `open_redis`); an async context manager closing it."""

    def __init__(
        self, stream: trio.SocketStream, address: RedisAddress, *, timeout_s: float
    ) -> None:
        self.address = address
        self._stream = stream
        self._timeout_s = timeout_s
        self._parser = RespParser()
        self._lock = trio.Lock()
        self._send_lock = trio.Lock()
        self.last_received = trio.current_time()
        """`trio.current_time()` when bytes last arrived (see `RedisSubscriber.keep_alive`)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the socket. Checkpoint: yes."""
        await self._stream.aclose()

    async def command(self, *args: bytes | str | int) -> Any:
        """Send one command and return its reply. Checkpoint: yes.

        Raises:
            RedisReplyError: Redis answered with an error.
            RedisConnectionError: the connection failed, or no reply came within the timeout.
        """
        async with self._lock:
            await self.send(*args)
            return await self.read_reply()

    async def send(self, *args: bytes | str | int) -> None:
        """Send one command without reading its reply. Checkpoint: yes."""
        data = encode_command(*args)
        async with self._send_lock:
            try:
                with trio.fail_after(self._timeout_s):
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise self._lost(f"sending failed: {e or type(e).__name__}") from e
            except trio.TooSlowError:
                raise self._lost(f"sending took over {self._timeout_s} s") from None

    async def read_reply(self, timeout_s: float | None = None) -> Any:
        """The next reply (waiting at most `timeout_s`, default the connection's timeout).

        Raises `RedisError` as `command` does. Checkpoint: yes.
        """
        timeout = self._timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(timeout) as scope:
            while True:
                reply = self._parser.next_reply()
                if reply is not NEED_DATA:
                    await trio.lowlevel.checkpoint()
                    return reply
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    raise self._lost(f"reading failed: {e or type(e).__name__}") from e
                if not data:
                    raise self._lost("Redis closed the connection")
                self.last_received = trio.current_time()
                self._parser.feed(data)
        assert scope.cancelled_caught
        raise self._lost(f"no reply within {timeout} s")

    def _lost(self, why: str) -> RedisConnectionError:
        return RedisConnectionError(f"{self.address.display()}: {why}")


async def open_redis(
    address: RedisAddress,
    *,
    client_name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RedisConnection:
    """Connect, ``AUTH`` (when the address has a password), ``SELECT`` (a database other
    than 0) and ``CLIENT SETNAME`` (`client_name`: no spaces). Checkpoint: yes.

    Raises:
        RedisConnectionError: no connection within `timeout_s`, or it failed.
        RedisReplyError: Redis refused the password (or a command), e.g. ``WRONGPASS``.
    """
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(address.host, address.port)
    except OSError as e:
        raise RedisConnectionError(
            f"cannot connect to {address.display()}: {e.strerror or e}"
        ) from None
    except trio.TooSlowError:
        raise RedisConnectionError(
            f"cannot connect to {address.display()} within {timeout_s} s"
        ) from None
    connection = RedisConnection(stream, address, timeout_s=timeout_s)
    try:
        if address.password is not None:
            user = (address.username,) if address.username else ()
            await _expect_ok(connection, "AUTH", *user, address.password)
        if address.db:
            await _expect_ok(connection, "SELECT", address.db)
        if client_name is not None:
            await _expect_ok(connection, "CLIENT", "SETNAME", client_name)
    except BaseException:
        with trio.CancelScope(shield=True):
            await connection.aclose()
        raise
    return connection


async def _expect_ok(connection: RedisConnection, *args: bytes | str | int) -> None:
    # AUTH's arguments (the password) never appear in an error.
    shown = "AUTH" if args[0] == "AUTH" else " ".join(str(a) for a in args)
    try:
        reply = await connection.command(*args)
    except RedisReplyError as e:
        raise RedisReplyError(f"{connection.address.display()}: {shown} refused: {e}") from None
    if reply != b"OK":
        raise RedisProtocolError(
            f"{connection.address.display()}: {shown} answered {reply!r}, not OK"
        )


class RedisSubscriber:
    """A connection in subscribed mode: it receives the messages of its channels."""

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._channels: set[bytes] = set()

    async def subscribe(self, *channels: str) -> None:
        """``SUBSCRIBE`` and wait for Redis to confirm each channel. Checkpoint: yes.

        Messages published after this returns are received (not those before).
        """
        wanted = {channel.encode() for channel in channels}
        await self.connection.send("SUBSCRIBE", *channels)
        while not wanted <= self._channels:
            reply = await self.connection.read_reply()
            if not self._bookkeeping(reply):
                raise RedisProtocolError(f"expected a subscribe confirmation, got {reply!r:.200}")

    async def next_message(self, timeout_s: float = float("inf")) -> tuple[bytes, bytes] | None:
        """The next message, as ``(channel, payload)``; None if none came within `timeout_s`.

        Raises `RedisError` (a lost connection, or a push that is not a message).
        Checkpoint: yes.
        """
        with trio.move_on_after(timeout_s):
            while True:
                reply = await self.connection.read_reply(float("inf"))
                match reply:
                    case [b"message", bytes(channel), bytes(payload)]:
                        return channel, payload
                    case _ if self._bookkeeping(reply):
                        continue
                    case _:
                        raise RedisProtocolError(
                            f"{self.connection.address.display()}: unexpected push "
                            f"{reply!r:.200} on a subscribed connection"
                        )
        return None

    async def keep_alive(self, interval_s: float, timeout_s: float) -> None:
        """``PING`` every `interval_s`; raise `RedisConnectionError` when nothing at all has
        arrived for `timeout_s` (run it beside the task reading messages). Checkpoint: yes."""
        while True:
            await trio.sleep(interval_s)
            silent = trio.current_time() - self.connection.last_received
            if silent > timeout_s:
                raise RedisConnectionError(
                    f"{self.connection.address.display()}: no answer for {silent:.0f} s"
                )
            await self.connection.send("PING")

    def _bookkeeping(self, reply: Any) -> bool:
        """Whether `reply` is a subscription count or a PING's answer (and note it)."""
        match reply:
            case [b"subscribe", bytes(channel), int()]:
                self._channels.add(channel)
                return True
            case [b"unsubscribe", bytes(channel), int()]:
                self._channels.discard(channel)
                return True
            case [b"pong", bytes()]:
                return True
        return False
