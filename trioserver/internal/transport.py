"""A small HTTP/1.1 client for main's internal listener: keep-alive connections over h11.

Theory of operation
-------------------
Every write a worker forwards costs one request to main, so this path is kept lean: plain h11
(the HTTP/1.1 state machine hypercorn uses too) over trio TCP streams, no TLS, no redirects,
no cookies, bodies read whole. It costs a fraction of a general client's CPU per request (the
forwarding overhead measured in BENCHMARKS.md section 11) and loads no TLS stack into a worker.

A connection is returned to the idle pool only when both sides finished the exchange cleanly;
any error, timeout or cancellation closes it. Nothing is ever sent twice (a forwarded write
must not be doubled), so an idle connection is not reused once it has been idle for
`MAX_IDLE_S`, well before main's keep-alive timeout (75 s) could close it under a request.
"""

from __future__ import annotations

import attrs
import h11

import trio

from trioserver.listeners import host_port

# Idle connections kept per worker (more concurrent requests open more, closed after use).
MAX_IDLE = 32
# Idle connections older than this are closed rather than reused (see the module docstring).
MAX_IDLE_S = 30.0
_READ_SIZE = 65536


class TransportError(Exception):
    """Main did not answer (refused, reset, timed out, or not HTTP)."""


@attrs.frozen
class RawResponse:
    """An answer as received."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = trio.current_time()


class InternalTransport:
    """Keep-alive HTTP/1.1 connections to one host and port."""

    def __init__(
        self, host: str, port: int, *, timeout_s: float, connect_timeout_s: float
    ) -> None:
        self._host = host
        self._port = port
        self._authority = host_port(host, port)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        """Send one request and read its whole answer. Checkpoint: yes.

        Raises:
            TransportError: no answer came.
        """
        conn = self._take_idle() or await self._connect()
        done = False
        try:
            response = await self._exchange(conn, method, target, headers, body)
            done = True
            return response
        finally:
            self._release(conn, reusable=done)

    async def aclose(self) -> None:
        """Close the idle connections. Checkpoint: yes."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.stream.aclose()

    def _take_idle(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < MAX_IDLE_S:
                return conn
            conn.stream.socket.close()
        return None

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> RawResponse:
        try:
            with trio.fail_after(self._timeout_s):
                request = h11.Request(
                    method=method,
                    target=target,
                    headers=[
                        ("host", self._authority),
                        ("content-length", str(len(body))),
                        *headers,
                    ],
                )
                data = conn.h11.send(request) + conn.h11.send(h11.Data(data=body))
                data += conn.h11.send(h11.EndOfMessage())
                await conn.stream.send_all(data)
                status = 0
                response_headers: tuple[tuple[str, str], ...] = ()
                chunks: list[bytes] = []
                while True:
                    event = conn.h11.next_event()
                    if event is h11.NEED_DATA:
                        conn.h11.receive_data(await conn.stream.receive_some(_READ_SIZE))
                        continue
                    if isinstance(event, h11.Response):
                        status = event.status_code
                        response_headers = tuple(
                            (k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers
                        )
                    elif isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise TransportError("connection closed before the answer ended")
            return RawResponse(status, response_headers, b"".join(chunks))
        except trio.TooSlowError:
            raise TransportError(f"no answer within {self._timeout_s:.0f} s") from None
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self._connect_timeout_s):
                return _Connection(await trio.open_tcp_stream(self._host, self._port))
        except trio.TooSlowError:
            raise TransportError(
                f"cannot connect to {self._authority} within {self._connect_timeout_s:.0f} s"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._authority}: {exc}") from None

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        states = (conn.h11.our_state, conn.h11.their_state)
        if reusable and states == (h11.DONE, h11.DONE) and len(self._idle) < MAX_IDLE:
            conn.h11.start_next_cycle()
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
            return
        # Not reusable (an error, a cancellation, `Connection: close`): close it without
        # waiting; the socket is not shared with anything else.
        conn.stream.socket.close()
