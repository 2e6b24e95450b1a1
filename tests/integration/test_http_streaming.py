"""The HTTP edge's streamed bodies (``body="stream"`` routes and `Response.stream`).

A small app with routes of its own, served by the real listener (`run_http_api`) on loopback:
the media routes that use this are tested in the media tests; these pin down the edge itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

import trio

from trioserver.api.http import MatrixApp, Request, Response, route
from trioserver.config import HttpConfig
from trioserver.errors import MatrixError
from trioserver.handlers.auth import Requester
from trioserver.nursery import run_http_api

from tests.integration.client import assert_error, assert_ok

LIMIT = 1024 * 1024


class Seen:
    """What the streaming handler observed."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.first_chunk = trio.Event()
        self.disconnected = trio.Event()


async def upload(seen: Seen, request: Request) -> Response:
    assert request.body == b""
    assert request.body_stream is not None
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > LIMIT:
        raise MatrixError("M_TOO_LARGE", "too large", status=413)
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.body_stream:
            seen.chunks.append(len(chunk))
            seen.first_chunk.set()
            size += len(chunk)
            if size > LIMIT:
                raise MatrixError("M_TOO_LARGE", "too large", status=413)
            digest.update(chunk)
    except BaseException:
        seen.disconnected.set()
        raise
    return Response({"size": size, "sha256": digest.hexdigest()})


async def download(seen: Seen, request: Request) -> Response:
    count = int(request.query_param("chunks") or "0")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            yield bytes([i % 256]) * 65536

    known = request.query_param("length") != "unknown"
    return Response(
        stream=chunks(),
        content_length=count * 65536 if known else None,
        content_type="application/octet-stream",
        headers=(("X-Test", "yes"),),
    )


async def echo_json(seen: Seen, request: Request) -> dict[str, object]:
    return {"got": request.json()}


async def no_auth(token: str) -> Requester:
    raise MatrixError("M_UNKNOWN_TOKEN", "no tokens here", status=401)


@pytest.fixture
async def edge() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    app = MatrixApp(
        seen,
        [
            route("POST", "/upload", upload, auth="none", body="stream"),
            route("GET", "/download", download, auth="none"),
            route("POST", "/json", echo_json, auth="none"),
        ],
        authenticate=no_auth,
        max_body_size=1000,
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        running = await nursery.start(
            run_http_api, app, HttpConfig(bind_addresses=("127.0.0.1",), port=0), stop.wait
        )
        yield running.base_urls[0], seen
        nursery.cancel_scope.cancel()


async def test_streamed_upload_is_read_in_chunks_beyond_the_json_limit(
    edge: tuple[str, Seen],
) -> None:
    base, seen = edge
    data = bytes(range(256)) * 3000  # 768,000 bytes: far above the JSON limit of 1000
    async with httpx.AsyncClient(base_url=base) as http:
        body = assert_ok(await http.post("/upload", content=data))
    assert body == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert len(seen.chunks) > 1
    assert max(seen.chunks) <= 65536


async def test_chunked_upload_without_content_length(edge: tuple[str, Seen]) -> None:
    base, _ = edge

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10_000

    async with httpx.AsyncClient(base_url=base) as http:
        body = assert_ok(await http.post("/upload", content=parts()))
    assert body["size"] == 100_000


async def test_early_error_is_read_by_the_client(edge: tuple[str, Seen]) -> None:
    base, _ = edge
    data = b"y" * (LIMIT + 1)
    async with httpx.AsyncClient(base_url=base) as http:
        assert_error(await http.post("/upload", content=data), 413, "M_TOO_LARGE")

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"z" * 65536

        # No Content-Length: the limit is found while reading; the answer still arrives,
        # and the connection serves the next request.
        assert_error(await http.post("/upload", content=parts()), 413, "M_TOO_LARGE")
        assert_ok(await http.post("/json", json={"a": 1}))


async def test_json_routes_keep_their_body_limit(edge: tuple[str, Seen]) -> None:
    base, _ = edge
    async with httpx.AsyncClient(base_url=base) as http:
        too_big = b"{" + b" " * 2000 + b"}"
        assert_error(await http.post("/json", content=too_big), 413, "M_TOO_LARGE")
        assert assert_ok(await http.post("/json", json={"a": 1})) == {"got": {"a": 1}}


async def test_client_going_away_mid_upload_is_seen_by_the_handler(
    edge: tuple[str, Seen],
) -> None:
    base, seen = edge
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000
    )
    with trio.fail_after(5):
        await seen.first_chunk.wait()
        await stream.aclose()
        await seen.disconnected.wait()


@pytest.mark.parametrize("length", ["known", "unknown"])
async def test_streamed_download(edge: tuple[str, Seen], length: str) -> None:
    base, _ = edge
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/download", params={"chunks": 20, "length": length})
        assert response.status_code == 200
        assert response.headers["x-test"] == "yes"
        assert response.headers["access-control-allow-origin"] == "*"
        expected = b"".join(bytes([i]) * 65536 for i in range(20))
        assert response.content == expected
        if length == "known":
            assert response.headers["content-length"] == str(len(expected))
        else:
            assert response.headers["transfer-encoding"] == "chunked"
        head = await http.head("/download", params={"chunks": 20})
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(expected))


async def test_huge_declared_body_is_refused_without_reading_it(edge: tuple[str, Seen]) -> None:
    # A Content-Length far past what the edge would drain: the answer comes at once and the
    # connection is closed, rather than reading (and dropping) a gigabyte first.
    base, seen = edge
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"a" * 1000
    )
    received = b""
    with trio.fail_after(5):
        while b"M_TOO_LARGE" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 413")
    assert not seen.chunks
    await stream.aclose()


async def test_a_stalled_body_is_given_up_on(
    edge: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that stops sending mid-body gets 408 (after http's IDLE_SECONDS; shortened
    # here), so a stalled upload does not hold its connection for ever.
    import trioserver.api.http as edge_module

    monkeypatch.setattr(edge_module._BodyStream, "IDLE_SECONDS", 0.3)
    base, seen = edge
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000
    )
    received = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 408")
    assert seen.disconnected.is_set()
    await stream.aclose()
