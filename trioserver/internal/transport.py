"""A small HTTP/1.1 client for main's internal listener: keep-alive connections, httptools.

Theory of operation
-------------------
Every write a worker forwards costs one request to main, so this path is kept lean: a request
written as bytes directly, the answer parsed by httptools (llhttp, the C parser the edge uses
too), over trio TCP streams; no TLS, no redirects, no cookies, bodies read whole. It costs a
fraction of a general client's CPU per request (BENCHMARKS.md §11), and replacing h11 took a
forwarded send's CPU on the worker from 0.40 to 0.33 ms (§12); no TLS stack is loaded into a
worker. Only our own main answers, but its answer is parsed as strictly as any (a malformed
one is a `TransportError`), and a header with a line break is refused before anything is sent.

A connection is returned to the idle pool only when both sides finished the exchange cleanly;
any error, timeout or cancellation closes it. Nothing is ever sent twice (a forwarded write
must not be doubled), so an idle connection is not reused once it has been idle for
`MAX_IDLE_S`, well before main's keep-alive timeout (75 s) could close it under a request.
"""

from __future__ import annotations

import attrs
import httptools

import trio

from trioserver.listeners import host_port

# Idle connections kept per worker (more concurrent requests open more, closed after use).
MAX_IDLE = 32
# Idle connections older than this are closed rather than reused (see the module docstring).
MAX_IDLE_S = 30.0
_READ_SIZE = 65536
_FORBIDDEN_IN_HEAD = ("\r", "\n", "\0")


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


class _Answer:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.messages = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_headers_complete(self) -> None:
        # llhttp answers this from the head; once the message is complete it has reset.
        self.keep_alive = self.parser.should_keep_alive()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.idle_since = trio.current_time()


def _request_head(
    method: str, target: str, authority: str, headers: list[tuple[str, str]], length: int
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {authority}", f"content-length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if any(char in line for line in lines for char in _FORBIDDEN_IN_HEAD) or " " in target:
        raise TransportError("a request header or target holds a line break or a space")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


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
        reusable = False
        try:
            response, reusable = await self._exchange(conn, method, target, headers, body)
            return response
        finally:
            self._release(conn, reusable=reusable)

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
    ) -> tuple[RawResponse, bool]:
        """The answer, and whether the connection may carry another request."""
        # Checked before anything is sent; the head is two lines' worth of latin-1 text.
        try:
            head = _request_head(method, target, self._authority, headers, len(body))
        except UnicodeEncodeError:
            raise TransportError("a request header is not latin-1") from None
        answer = _Answer()
        try:
            with trio.fail_after(self._timeout_s):
                await conn.stream.send_all(head + body)
                while not answer.complete:
                    data = await conn.stream.receive_some(_READ_SIZE)
                    if not data:
                        raise TransportError("connection closed before the answer ended")
                    answer.parser.feed_data(data)
            status = answer.parser.get_status_code()
            response = RawResponse(status, tuple(answer.headers), b"".join(answer.chunks))
            # Bytes past the answer (never sent by our main) leave the connection unusable.
            return response, answer.keep_alive and answer.messages == 1
        except trio.TooSlowError:
            raise TransportError(f"no answer within {self._timeout_s:.0f} s") from None
        except (OSError, trio.BrokenResourceError, httptools.HttpParserError) as exc:
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
        # `reusable`: the answer ended cleanly and keeps the connection open.
        if reusable and len(self._idle) < MAX_IDLE:
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
            return
        # Not reusable (an error, a cancellation, `Connection: close`): close it without
        # waiting; the socket is not shared with anything else.
        conn.stream.socket.close()
