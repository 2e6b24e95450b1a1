"""The plain-HTTP/1.1 edge (trioserver.http_edge) on the wire, over real loopback TCP.

A small ASGI app written here answers; the client side is raw bytes, read back with h11, so
that framing, keep-alive, pipelining, timeouts and shutdown can be checked exactly.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import orjson
import pytest

import trio

from trioserver.http_edge import EdgeLimits, open_listeners, serve_http

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class App:
    """Routes: /echo (the body back), /stream (three chunks, no length), /wait (until
    released), /fail (raises), /disconnect (reports what receive() says once the body is
    read)."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.seen_disconnect = trio.Event()
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.requests.append(scope)
        path = scope["path"]
        if path == "/fail":
            raise RuntimeError("boom")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if path == "/wait":
            await self.release.wait()
        if path == "/disconnect":
            if (await receive())["type"] == "http.disconnect":
                self.seen_disconnect.set()
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one", b"two", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        answer = orjson.dumps(
            {"path": path, "query": scope["query_string"].decode(), "n": len(body)}
        )
        if path == "/echo":
            answer = body
        headers = [(b"content-type", b"application/json")]
        if scope["method"] == "HEAD":
            headers.append((b"content-length", b"1234"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


_OPEN: list[Wire] = []


class Wire:
    """One client connection: raw bytes out, h11 events back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        _OPEN.append(self)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def response(self, timeout_s: float = 5.0) -> tuple[h11.Response, bytes]:
        """The next response and its body (h11 parses; a request must have been sent)."""
        head: h11.Response | None = None
        body = b""
        with trio.fail_after(timeout_s):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert head is not None
                    if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                        self.h11.start_next_cycle()
                    return head, body
                else:
                    raise AssertionError(f"unexpected {event!r}")

    def expect(self, method: bytes = b"GET", target: bytes = b"/") -> None:
        """Tell h11 which request the raw bytes sent (it needs it to read the answer)."""
        self.h11.send(h11.Request(method=method, target=target, headers=[("host", "x")]))
        self.h11.send(h11.EndOfMessage())

    async def closed(self, timeout_s: float = 5.0) -> bool:
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return True
                if not data:
                    return True
        return False


@pytest.fixture
async def served(nursery: trio.Nursery) -> tuple[App, int, trio.Event]:
    app, stop = App(), trio.Event()
    limits = EdgeLimits(
        keep_alive_timeout_s=0.5, request_timeout_s=0.5, max_head_bytes=4096, graceful_timeout_s=2
    )
    listeners = await open_listeners(["127.0.0.1"], 0)
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(
        partial(serve_http, app, listeners, limits=limits, shutdown_trigger=stop.wait)
    )
    return app, port, stop


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()
    while _OPEN:
        await _OPEN.pop().stream.aclose()


async def connect(port: int) -> Wire:
    return Wire(await trio.open_tcp_stream("127.0.0.1", port))


async def refused_within(port: int, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                return True
            await stream.aclose()
            await trio.sleep(0.02)
    return False


def header(response: h11.Response, name: bytes) -> bytes | None:
    return dict(response.headers).get(name)


async def test_keep_alive_and_pipelining(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    # Two requests in one write, a third after: answered in order on one connection.
    await wire.send(b"GET /a?x=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    for path in (b"/a", b"/b"):
        wire.expect(target=path)
        response, body = await wire.response()
        assert response.status_code == 200
        assert orjson.loads(body)["path"] == path.decode()
        assert header(response, b"date")
    await wire.send(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    wire.expect(b"POST", b"/c")
    _, body = await wire.response()
    assert orjson.loads(body) == {"path": "/c", "query": "", "n": 5}


async def test_http_1_0_closes_unless_kept_alive(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    await wire.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        data += await wire.stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"connection: keep-alive" in data.lower()
    await wire.send(b"GET /b HTTP/1.0\r\n\r\n")
    rest = b""
    while True:
        chunk = await wire.stream.receive_some(65536)
        if not chunk:
            break
        rest += chunk
    assert rest.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"connection: close" in rest.lower()


async def test_chunked_request_and_streamed_response(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    await wire.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    wire.expect(b"POST", b"/echo")
    response, body = await wire.response()
    assert body == b"hello world"
    assert header(response, b"content-length") == b"11"
    await wire.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    wire.expect(target=b"/stream")
    response, body = await wire.response()
    assert header(response, b"transfer-encoding") == b"chunked"
    assert body == b"onetwothree"


async def test_expect_100_continue(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    await wire.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    with trio.fail_after(5):
        interim = await wire.stream.receive_some(65536)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await wire.send(b"abc")
    wire.expect(b"POST", b"/echo")
    _, body = await wire.response()
    assert body == b"abc"


async def test_head_has_no_body(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    await wire.send(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    wire.expect(b"HEAD", b"/a")
    response, body = await wire.response()
    assert header(response, b"content-length") == b"1234"
    assert body == b""
    wire.expect(target=b"/b")
    _, body = await wire.response()  # the next answer starts where the head ended
    assert orjson.loads(body)["path"] == "/b"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 8000 + b"\r\n\r\n", 431),
    ],
)
async def test_a_malformed_request_is_refused_and_closed(
    served: tuple[App, int, trio.Event], request_bytes: bytes, status: int
) -> None:
    app, port, _ = served
    wire = await connect(port)
    await wire.send(request_bytes)
    data = b""
    with trio.fail_after(5):
        while True:
            chunk = await wire.stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["errcode"] == "M_UNKNOWN"
    assert not app.requests


async def test_an_app_failure_is_a_500(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    await wire.send(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
    wire.expect(target=b"/fail")
    response, body = await wire.response()
    assert response.status_code == 500
    assert orjson.loads(body)["errcode"] == "M_UNKNOWN"
    assert await wire.closed()


async def test_timeouts_close_only_the_slow_connection(
    served: tuple[App, int, trio.Event],
) -> None:
    _, port, _ = served
    idle = await connect(port)
    half = await connect(port)
    await half.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    # Meanwhile another client is served at once.
    other = await connect(port)
    await other.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    other.expect()
    assert (await other.response(timeout_s=0.3))[0].status_code == 200
    # Both slow ones are closed after their timeouts (0.5 s here).
    assert await idle.closed(timeout_s=3)
    assert await half.closed(timeout_s=3)


async def test_a_long_request_may_be_silent(served: tuple[App, int, trio.Event]) -> None:
    # A long-poll: the client says nothing while the app computes; no timeout applies.
    app, port, _ = served
    wire = await connect(port)
    await wire.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    await trio.sleep(1.0)  # twice the keep-alive and request timeouts
    app.release.set()
    wire.expect(target=b"/wait")
    assert (await wire.response())[0].status_code == 200


async def test_the_app_sees_a_client_that_went_away(served: tuple[App, int, trio.Event]) -> None:
    app, port, _ = served
    wire = await connect(port)
    await wire.send(b"GET /disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
    await trio.sleep(0.1)
    await wire.stream.aclose()
    with trio.fail_after(5):
        await app.seen_disconnect.wait()


async def test_a_big_body_is_read_as_the_app_reads_it(served: tuple[App, int, trio.Event]) -> None:
    _, port, _ = served
    wire = await connect(port)
    size = 3 * 1024 * 1024
    await wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wire.send, b"z" * size)
        wire.expect(b"POST", b"/echo")
        _, body = await wire.response(timeout_s=20)
    assert body == b"z" * size


async def test_graceful_shutdown(served: tuple[App, int, trio.Event]) -> None:
    app, port, stop = served
    idle = await connect(port)
    busy = await connect(port)
    await busy.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    await trio.sleep(0.1)
    stop.set()
    assert await idle.closed(timeout_s=1)
    assert await refused_within(port, 1.0)  # the listener closes right after the trigger
    app.release.set()  # the request in hand is still answered, then the connection closes
    busy.expect(target=b"/wait")
    response, _ = await busy.response()
    assert response.status_code == 200
    assert header(response, b"connection") == b"close"
    assert await busy.closed()


async def test_pipelined_requests_are_bounded(nursery: trio.Nursery) -> None:
    # A client that pipelines without reading answers is not buffered without end: the
    # reader stops at max_pipelined queued requests and TCP holds back the rest.
    app = App()
    listeners = await open_listeners(["127.0.0.1"], 0)
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(partial(serve_http, app, listeners, limits=EdgeLimits(max_pipelined=2)))
    wire = await connect(port)
    flood = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 300_000  # 9 MB, more than TCP buffers
    sent = trio.Event()

    async def send_all() -> None:
        await wire.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n" + flood)
        sent.set()

    nursery.start_soon(send_all)
    await trio.sleep(1.0)
    assert len(app.requests) == 1  # the app sees one at a time, in order
    assert not sent.is_set()  # the server stopped reading
    app.release.set()
    for target in (b"/wait", b"/a", b"/a"):
        wire.expect(target=target)
        assert (await wire.response())[0].status_code == 200


_BINDV6ONLY = Path("/proc/sys/net/ipv6/bindv6only")
_DUAL_STACK = socket.has_ipv6 and _BINDV6ONLY.exists() and _BINDV6ONLY.read_text().strip() == "0"


async def test_an_ipv6_wildcard_listener_is_dual_stack_where_the_system_says_so(
    nursery: trio.Nursery,
) -> None:
    # `bind_addresses = ["::"]` kept answering IPv4 clients as it did on hypercorn (trio's own
    # listeners would have set IPV6_V6ONLY).
    if not _DUAL_STACK:
        pytest.skip("no dual-stack IPv6 on this machine")
    app = App()
    listeners = await open_listeners(["::"], 0)
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(partial(serve_http, app, listeners))
    wire = await connect(port)  # 127.0.0.1
    await wire.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    wire.expect(target=b"/a")
    assert (await wire.response())[0].status_code == 200
