"""The worker's HTTP/1.1 client to main (`trioserver.internal.transport`), against a real
TCP server on loopback speaking h11."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import h11
import pytest

import trio

from trioserver.internal.transport import MAX_IDLE_S, InternalTransport, TransportError


@asynccontextmanager
async def http_server(
    answer: Callable[[h11.Request, bytes], tuple[int, bytes]],
) -> AsyncIterator[tuple[int, list[int]]]:
    """A keep-alive HTTP/1.1 server; yields its port and a list counting its connections."""
    connections: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(1)
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                status, payload = answer(request, body)
                headers = [("content-length", str(len(payload)))]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                out += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield port, connections
        nursery.cancel_scope.cancel()


def echo(request: h11.Request, body: bytes) -> tuple[int, bytes]:
    return 201, request.method + b" " + request.target + b" " + body


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with http_server(echo) as (port, connections):
        transport = InternalTransport("127.0.0.1", port, timeout_s=5, connect_timeout_s=1)
        for i in range(3):
            response = await transport.request("POST", f"/x?{i}", [("x-a", "b")], b"body")
            assert (response.status, response.body) == (201, f"POST /x?{i} body".encode())
            assert response.header("content-length") == str(len(response.body))
        assert len(connections) == 1
        await transport.aclose()


async def test_an_old_idle_connection_is_not_reused(autojump_clock: trio.abc.Clock) -> None:
    async with http_server(echo) as (port, connections):
        transport = InternalTransport("127.0.0.1", port, timeout_s=5, connect_timeout_s=1)
        await transport.request("GET", "/a", [], b"")
        await trio.sleep(MAX_IDLE_S + 1)
        await transport.request("GET", "/b", [], b"")
        assert len(connections) == 2
        await transport.aclose()


async def test_no_server_is_a_transport_error() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = InternalTransport("127.0.0.1", port, timeout_s=5, connect_timeout_s=1)
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.request("GET", "/", [], b"")


async def test_a_server_that_closes_without_answering_is_a_transport_error() -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, close_at_once, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        transport = InternalTransport("127.0.0.1", port, timeout_s=5, connect_timeout_s=1)
        with pytest.raises(TransportError):
            await transport.request("POST", "/", [], b"x")
        nursery.cancel_scope.cancel()


async def test_a_silent_server_times_out(autojump_clock: trio.abc.Clock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        transport = InternalTransport("127.0.0.1", port, timeout_s=3, connect_timeout_s=1)
        with pytest.raises(TransportError, match="no answer within 3 s"):
            await transport.request("GET", "/", [], b"")
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def replying(reply: bytes, *, then_close: bool) -> AsyncIterator[InternalTransport]:
    """A transport to a server that answers the first request with the bytes `reply`, then
    closes the connection or keeps it open."""

    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(reply)
        if then_close:
            await stream.aclose()
        else:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        transport = InternalTransport("127.0.0.1", port, timeout_s=3, connect_timeout_s=1)
        yield transport
        await transport.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        # A chunked answer, read whole.
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
async def test_answers_are_read_whole(reply: bytes, body: bytes) -> None:
    async with replying(reply, then_close=False) as transport:
        assert (await transport.request("POST", "/", [], b"x")).body == body


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",  # then the connection closes
    ],
)
async def test_a_malformed_or_cut_answer_is_a_transport_error(reply: bytes) -> None:
    async with replying(reply, then_close=True) as transport:
        with pytest.raises(TransportError):
            await transport.request("POST", "/", [], b"x")


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/a", [("x-a", "b\r\nx-injected: 1")]),
        ("/a b", []),
        ("/a", [("x-a\n", "b")]),
    ],
)
async def test_a_line_break_in_a_header_is_refused_before_sending(
    target: str, headers: list[tuple[str, str]]
) -> None:
    async with http_server(echo) as (port, _connections):
        transport = InternalTransport("127.0.0.1", port, timeout_s=5, connect_timeout_s=1)
        with pytest.raises(TransportError, match="line break or a space"):
            await transport.request("POST", target, headers, b"")
        # Nothing of it went out: the server reads the next request as the first.
        assert (await transport.request("GET", "/ok", [], b"")).body == b"GET /ok "
        await transport.aclose()
