"""The plain-HTTP/1.1 edge: an ASGI server on trio and httptools (the llhttp C parser).

Theory of operation
-------------------
Why not hypercorn for plain HTTP: with h11, its pure-Python HTTP/1.1 state machine, hypercorn
spends more CPU on a request than most handlers do (BENCHMARKS.md section 3), and importing it
(with h2, wsproto and multiprocessing) costs 4 MB in every process of a pool. TLS listeners
still use hypercorn (`nursery.run_http_api` picks); nothing else knows which serves.

Each accepted connection runs two tasks. The reader feeds what arrives to the parser, whose
callbacks queue requests (`_Request`) and their body chunks. The responder takes the requests
one at a time, in order (HTTP/1.1 pipelining), and runs the app on each with ASGI ``receive``
and ``send``. The reader stops reading while the current request has more than
`EdgeLimits.body_buffer_bytes` unread, or `EdgeLimits.max_pipelined` requests wait: a client
sending faster than the app reads is held back by TCP, not buffered here.

Framing of a response: its ``content-length`` when the app gives one; otherwise the length of a
body sent in one piece, or chunked transfer coding for a streamed one (close-delimited for an
HTTP/1.0 client). A HEAD, 204 or 304 answer has no body.

Timeouts, per connection, so that a slow or silent client holds only its own connection:
`EdgeLimits.keep_alive_timeout_s` between requests, `EdgeLimits.request_timeout_s` while a
request is half received, `EdgeLimits.write_timeout_s` for a client that stops reading. While
the app computes an answer (a long-poll ``/sync``) the client may stay silent. When the client
goes away, ``receive`` answers ``http.disconnect`` and later sends are dropped; the app is not
cancelled, so a write in progress finishes as it would have.

A malformed request gets a 400 (a head over `EdgeLimits.max_head_bytes` a 431) and the
connection is closed. `serve_http` with a ``shutdown_trigger`` stops accepting when it returns,
closes idle connections, lets the others finish the request in hand for up to
`EdgeLimits.graceful_timeout_s`, then cancels them.
"""

from __future__ import annotations

import errno
import http
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs
import httptools
import orjson

import trio

from trioserver.listeners import KEEP_ALIVE_TIMEOUT_S, host_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from hypercorn.typing import ASGIFramework, ASGIReceiveEvent, ASGISendEvent

logger = logging.getLogger(__name__)

# Accept errors that mean "out of something for now": wait and accept again (as trio's
# serve_listeners does), rather than stop serving.
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_S = 0.1
_NO_BODY_STATUSES = frozenset({204, 304})


@attrs.frozen
class EdgeLimits:
    """How long and how much one connection may take (see the module docstring)."""

    keep_alive_timeout_s: float = KEEP_ALIVE_TIMEOUT_S
    # Longer than the app's own body idle timeout (api/http.py: 60 s), which answers 408.
    request_timeout_s: float = 90.0
    write_timeout_s: float = 60.0
    max_head_bytes: int = 64 * 1024
    body_buffer_bytes: int = 256 * 1024
    max_pipelined: int = 8
    graceful_timeout_s: float = 5.0


LISTEN_BACKLOG = 1024


def bind_sockets(
    bind_addresses: Sequence[str], port: int, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Bind and listen on every address of `bind_addresses` at `port` (0: any free one).

    An IPv6 address is one with a colon; ``::`` is left dual-stack where the system makes it
    so (as hypercorn left it; trio's own listeners would set IPV6_V6ONLY). The sockets are not
    inheritable (`run --workers` passes them on explicitly). With `reuse_port`, other sockets
    of this user with the option may bind the same address and port, and the kernel spreads
    new connections over them (``SO_REUSEPORT``).

    Raises:
        OSError: an address cannot be bound (the sockets bound so far are closed).
    """
    sockets: list[socket.socket] = []
    try:
        for address in bind_addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def open_listeners(
    bind_addresses: Sequence[str], port: int, listen_fds: Sequence[int] = ()
) -> list[trio.SocketListener]:
    """Listening sockets: adopted from `listen_fds` (this call owns them) when given, else
    bound on every address of `bind_addresses` at `port` (`bind_sockets`).

    Raises:
        OSError: an address cannot be bound.
    """
    await trio.lowlevel.checkpoint()
    if listen_fds:
        sockets = [socket.socket(fileno=fd) for fd in listen_fds]
    else:
        sockets = bind_sockets(bind_addresses, port)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


def bound_urls(listeners: Sequence[trio.SocketListener]) -> list[str]:
    """``http://host:port`` of each listener (as hypercorn reports its binds)."""
    urls = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        urls.append(f"http://{host_port(host, port)}")
    return urls


async def serve_http(
    app: ASGIFramework,
    listeners: Sequence[trio.SocketListener],
    *,
    limits: EdgeLimits = EdgeLimits(),
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `listeners` (closed on return) until cancelled, or until
    `shutdown_trigger` returns and the requests in hand are answered.

    Calls ``task_status.started(urls)`` (`bound_urls`) once accepting. Checkpoint: yes.
    """
    try:
        await _serve(app, listeners, limits, shutdown_trigger, task_status)
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def _serve(
    app: ASGIFramework,
    listeners: Sequence[trio.SocketListener],
    limits: EdgeLimits,
    shutdown_trigger: Callable[[], Awaitable[None]] | None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    connections: set[_Connection] = set()
    async with trio.open_nursery() as nursery:
        accepting = trio.CancelScope()

        async def accept_all() -> None:
            with accepting:
                async with trio.open_nursery() as accept_nursery:
                    for listener in listeners:
                        accept_nursery.start_soon(_accept_loop, listener, handle, nursery)
            for listener in listeners:
                await listener.aclose()  # stop accepting: others of a pool take new ones

        async def handle(stream: trio.SocketStream) -> None:
            connection = _Connection(app, stream, limits)
            connections.add(connection)
            try:
                await connection.run()
            finally:
                connections.discard(connection)

        nursery.start_soon(accept_all)
        task_status.started(bound_urls(listeners))
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        accepting.cancel()
        for connection in list(connections):
            connection.close_when_idle()
        with trio.move_on_after(limits.graceful_timeout_s):
            while connections:  # noqa: ASYNC110 -- connections end on their own schedule
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def _accept_loop(
    listener: trio.SocketListener,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    connections_nursery: trio.Nursery,
) -> None:
    # Connections run in `connections_nursery`, not under this loop: they outlive it when a
    # graceful shutdown stops accepting.
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                raise
            logger.warning("accepting a connection failed (%s); retrying", exc)
            await trio.sleep(_ACCEPT_RETRY_S)
            continue
        connections_nursery.start_soon(handle, stream)


class _Request:
    """One request: its scope and the body chunks received and not yet read by the app."""

    def __init__(self, scope: dict[str, Any], *, keep_alive: bool, expect_continue: bool) -> None:
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.head = scope["method"] == "HEAD"
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False  # the whole body has been received
        self.final_read = False  # ... and handed to the app
        self.changed = trio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class _Connection:
    """One client connection (see the module docstring)."""

    def __init__(self, app: ASGIFramework, stream: trio.SocketStream, limits: EdgeLimits) -> None:
        self._app = app
        self._stream = stream
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[_Request] = deque()  # received heads, oldest first
        self._active: _Request | None = None  # the request the app is answering
        self._receiving: _Request | None = None  # the request whose body is arriving
        self._in_head = False
        # The size of the head being received: raw bytes while it spans reads, and the sum
        # of the URL and header lengths the parser reports.
        self._head_bytes = 0
        self._head_size = 0
        self._head_too_large = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._progress = trio.Event()  # the responder took a request or read body
        self._arrived = trio.Event()  # the reader queued a request or saw the end
        self._read_done = False  # no more requests will arrive
        self._disconnected = trio.Event()  # EOF or a failed write: receive() says so
        self._write_failed = False  # the client is gone: later writes are dropped
        self._closing = False  # close after the request in hand
        self._idle = True
        self._write_lock = trio.Lock()
        sockname = stream.socket.getsockname()
        peername = stream.socket.getpeername()
        self._server = (sockname[0], sockname[1])
        self._client = (peername[0], peername[1])

    async def run(self) -> None:
        """Serve requests until either side closes. Checkpoint: yes."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop)
                await self._respond_loop()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    def close_when_idle(self) -> None:
        """Shutting down: close now if no request is in hand, else after its answer."""
        self._closing = True
        if self._idle:
            self._finish_reading()

    # -- Reading -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self._read_done:
                data = await self._receive()
                if data is None:
                    return
                head_began = self._in_head
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    # No upgrades (WebSocket, h2c) here: answer what was asked, then close.
                    self._closing = True
                    return
                except httptools.HttpParserError as exc:
                    await self._refuse(400, f"Malformed HTTP request: {exc}")
                    return
                if self._in_head:  # a head not complete after this read: count it raw
                    self._head_bytes = (self._head_bytes if head_began else 0) + len(data)
                if self._head_too_large or self._head_bytes > self._limits.max_head_bytes:
                    await self._refuse(431, "Request header fields too large")
                    return
                while self._must_wait() and not self._read_done:
                    await self._progress.wait()
        finally:
            self._finish_reading()
            if self._receiving is not None:
                self._disconnected.set()  # a body cut short: the app sees a disconnect
            self._wake_requests()

    async def _receive(self) -> bytes | None:
        """The next bytes from the client, or None at EOF, error or timeout."""
        if self._in_head or self._receiving is not None:
            timeout = self._limits.request_timeout_s
        elif self._active is not None or self._pending:
            timeout = float("inf")  # the app is computing an answer
        else:
            timeout = self._limits.keep_alive_timeout_s
        try:
            with trio.move_on_after(timeout):
                data = await self._stream.receive_some(65536)
                if not data:
                    self._disconnected.set()
                    return None
                return data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._disconnected.set()
            return None
        if self._receiving is not None or self._in_head:
            self._disconnected.set()  # the client stopped half way through a request
        return None

    def _must_wait(self) -> bool:
        receiving = self._receiving
        if receiving is not None and receiving.buffered > self._limits.body_buffer_bytes:
            return True
        return len(self._pending) >= self._limits.max_pipelined

    def _finish_reading(self) -> None:
        self._read_done = True
        self._arrived.set()
        self._progress.set()

    async def _refuse(self, status: int, message: str) -> None:
        # Only when nothing is in hand or queued can we answer; otherwise just stop.
        self._closing = True
        if self._active is None and not self._pending:
            await self._write(_closing_error("1.1", status, message, head_only=False))

    # httptools callbacks (synchronous, during feed_data) ----------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_size = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_size > self._limits.max_head_bytes:
            self._head_too_large = True  # refused once feed_data returns; nothing queued
            return
        parser = self._parser
        url = httptools.parse_url(self._url)
        raw_path = url.path or b"/"
        version = parser.get_http_version()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii", "replace")),
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._client,
            "server": self._server,
            "extensions": {},
        }
        expect = any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in self._headers
        )
        request = _Request(scope, keep_alive=parser.should_keep_alive(), expect_continue=expect)
        self._receiving = request
        self._pending.append(request)
        self._idle = False
        self._arrived.set()

    def on_body(self, body: bytes) -> None:
        request = self._receiving
        if request is None:
            return  # the body of a refused head
        request.chunks.append(body)
        request.buffered += len(body)
        request.notify()

    def on_message_complete(self) -> None:
        request = self._receiving
        if request is None:
            return
        request.complete = True
        request.notify()
        self._receiving = None

    # -- Answering -----------------------------------------------------------------------

    async def _respond_loop(self) -> None:
        while True:
            while not self._pending:
                if self._read_done:
                    return
                self._arrived = trio.Event()
                await self._arrived.wait()
            request = self._pending.popleft()
            self._active = request
            self._progress.set()
            self._progress = trio.Event()
            reusable = await self._answer(request)
            self._active = None
            if not reusable or self._closing:
                return
            self._idle = not self._pending

    async def _answer(self, request: _Request) -> bool:
        """Run the app on `request`; whether the connection can carry another request."""
        response = _Response(request)

        async def receive() -> ASGIReceiveEvent:
            return await self._app_receive(request, response)

        async def send(message: ASGISendEvent) -> None:
            await self._app_send(request, response, message)

        try:
            await self._app(request.scope, receive, send)  # type: ignore[arg-type]
        except Exception:
            # Boundary: one request (STYLE S4); the app renders its own errors, so this is a bug.
            logger.exception(
                "the app failed on %s %s", request.scope["method"], request.scope["path"]
            )
            if not response.started:
                await self._write_error_500(request)
            return False
        if not response.finished:
            if not response.started:
                await self._write_error_500(request)
            return False  # a response cut short: the client cannot find the next one
        # `response.close` covers a request that did not ask to keep the connection.
        return request.complete and not response.close and not self._disconnected.is_set()

    async def _app_receive(self, request: _Request, response: _Response) -> ASGIReceiveEvent:
        if request.expect_continue and not request.complete and not response.started:
            request.expect_continue = False
            await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if request.chunks:
                # One chunk (at most one socket read) at a time: what a streaming handler
                # holds stays bounded.
                body = request.chunks.popleft()
                request.buffered -= len(body)
                self._progress.set()
                self._progress = trio.Event()
                more = bool(request.chunks) or not request.complete
                request.final_read = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if request.complete and not request.final_read:
                request.final_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self._disconnected.is_set():
                return {"type": "http.disconnect"}
            if request.final_read:
                await self._disconnected.wait()
                continue
            await request.changed.wait()

    async def _app_send(
        self, request: _Request, response: _Response, message: ASGISendEvent
    ) -> None:
        if message["type"] == "http.response.start":
            if response.started:
                raise RuntimeError("http.response.start sent twice")
            response.start(int(message["status"]), list(message.get("headers", ())))
            return
        if message["type"] != "http.response.body":
            return
        if not response.started or response.finished:
            raise RuntimeError("http.response.body outside a response")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        data = response.frame(body, more, self._closing)
        if not more:
            response.finished = True
        if data and not self._write_failed:
            await self._write(data)

    async def _write_error_500(self, request: _Request) -> None:
        version = request.scope["http_version"]
        await self._write(
            _closing_error(version, 500, "Internal server error", head_only=request.head)
        )

    async def _write(self, data: bytes) -> None:
        try:
            async with self._write_lock:
                with trio.fail_after(self._limits.write_timeout_s):
                    await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            self._write_failed = True
            self._disconnected.set()
            self._finish_reading()

    def _wake_requests(self) -> None:
        for request in (self._active, *self._pending):
            if request is not None:
                request.notify()


class _Response:
    """The answer in progress: status and headers until the first body, then the framing."""

    def __init__(self, request: _Request) -> None:
        self._request = request
        self.started = False
        self.finished = False
        self.close = not request.keep_alive
        self._status = 500
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_sent = False
        self._chunked = False

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self._status = status
        self._headers = [(bytes(name).lower(), bytes(value)) for name, value in headers]
        for name, value in self._headers:
            if name == b"connection" and b"close" in value.lower():
                self.close = True

    def frame(self, body: bytes, more: bool, closing: bool) -> bytes:
        """The bytes to write for this piece of the body (with the head before the first)."""
        no_body = self._request.head or self._status in _NO_BODY_STATUSES
        if self._head_sent:
            if no_body or not body:
                return b"0\r\n\r\n" if self._chunked and not more else b""
            return _chunk(body, last=not more) if self._chunked else body
        self._head_sent = True
        headers = self._headers
        has_length = any(name == b"content-length" for name, _ in headers)
        version = self._request.scope["http_version"]
        if not has_length and not no_body:
            if not more:
                headers.append((b"content-length", str(len(body)).encode()))
            elif version == "1.1":
                headers.append((b"transfer-encoding", b"chunked"))
                self._chunked = True
            else:
                self.close = True  # HTTP/1.0: the end of the body is the end of the connection
        if closing:
            self.close = True
        if not any(name == b"connection" for name, _ in headers):
            if self.close:
                headers.append((b"connection", b"close"))
            elif version == "1.0":
                headers.append((b"connection", b"keep-alive"))
        headers.append((b"date", _http_date()))
        head = _status_line(version, self._status) + _header_block(headers)
        if no_body:
            return head
        if self._chunked:
            return head + (_chunk(body, last=not more) if body or not more else b"")
        return head + body


def _closing_error(version: str, status: int, message: str, *, head_only: bool) -> bytes:
    """A whole Matrix error response (``M_UNKNOWN``) that closes the connection."""
    body = orjson.dumps({"errcode": "M_UNKNOWN", "error": message})
    head = _status_line(version, status) + _header_block(
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
    )
    return head if head_only else head + body


def _chunk(body: bytes, *, last: bool) -> bytes:
    data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
    return data + b"0\r\n\r\n" if last else data


_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


def _status_line(version: str, status: int) -> bytes:
    return b"HTTP/%s %d %s\r\n" % (version.encode(), status, _REASONS.get(status, b""))


def _header_block(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers) + b"\r\n"


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header's value (RFC 9110 IMF-fixdate), computed once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date_cache[1]
