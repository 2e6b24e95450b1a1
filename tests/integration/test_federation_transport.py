"""Outbound federation requests over real TLS on loopback: `FederationClient` against small
hypercorn servers whose certificates come from a test CA (trustme).

The remote checks each request's X-Matrix signature with `request_auth` and echoes what it
received. Server names with explicit ports connect directly; well-known delegation is tested
end to end by pointing the default fetcher at a TLS server's port, SRV delegation with a fake
SRV lookup (the TLS name checks are real in both).
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trustme
from signedjson.key import generate_signing_key, get_verify_key

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from trioserver.config import FederationConfig
from trioserver.errors import MatrixError
from trioserver.federation.connections import (
    FederationTransport,
    federation_http_client,
    federation_ssl_context,
)
from trioserver.federation.discovery import ServerResolver, SrvRecord
from trioserver.federation.request_auth import parse_authorization, verify_request
from trioserver.federation.transport import (
    DestinationNotAllowed,
    DestinationUnreachable,
    FederationClient,
    RemoteError,
    fed_path,
)
from trioserver.federation.well_known import (
    HttpWellKnownFetcher,
    WellKnownResponse,
    WellKnownUnavailable,
)
from trioserver.guarded_http import AddressPolicy

ORIGIN = "origin.test"
SIGNING_KEY = generate_signing_key("k1")
LOOPBACK = ("127.0.0.0/8",)


@attrs.frozen
class Pki:
    """A test CA and one server certificate (localhost, 127.0.0.1 and srv.test)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "srv.test")
    pki = Pki(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    cert.private_key_pem.write_to_path(str(pki.key_file))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(pki.cert_file), append=True)
    return pki


@attrs.define(eq=False)
class Remote:
    """A remote homeserver's HTTPS endpoint; see `app` for its paths."""

    port: int = 0
    well_known: Any = None  # the /.well-known/matrix/server JSON; None: 404
    received: list[dict[str, Any]] = attrs.field(factory=list)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI application."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        uri = scope["raw_path"].decode()
        if scope["query_string"]:
            uri += "?" + scope["query_string"].decode()
        request = {"method": scope["method"], "uri": uri, "headers": headers, "body": body}
        request["client_port"] = scope["client"][1]
        self.received.append(request)
        await self._answer(scope["path"], request, send)

    async def _answer(self, path: str, request: dict[str, Any], send: Any) -> None:
        match path:
            case "/.well-known/matrix/server" if self.well_known is not None:
                await respond(send, 200, self.well_known)
            case "/_matrix/test/error":
                await respond(send, 403, {"errcode": "M_FORBIDDEN", "error": "not you"})
            case "/_matrix/test/html-error":
                await respond(send, 502, b"<html>Bad gateway</html>")
            case "/_matrix/test/not-json":
                await respond(send, 200, b"hello")
            case "/_matrix/test/big":
                await respond(send, 200, b" " * 5000)
            case "/_matrix/test/endless":
                await stream_forever(send, pause=0)
            case "/_matrix/test/drip":
                await stream_forever(send, pause=0.05)
            case "/_matrix/test/hang":
                await trio.sleep_forever()
            case _:
                await respond(send, *echo(request))


def echo(request: dict[str, Any]) -> tuple[int, Any]:
    """What the remote saw, with the X-Matrix signature checked as an inbound server does."""
    content = json.loads(request["body"]) if request["body"] else None
    seen = {
        "method": request["method"],
        "uri": request["uri"],
        "host": request["headers"]["host"],
        "content": content,
        "client_port": request["client_port"],
        "user_agent": request["headers"].get("user-agent"),
        "authorization": request["headers"].get("authorization"),
    }
    if seen["authorization"] is None:
        return 200, seen
    try:
        auth = parse_authorization(seen["authorization"])
        assert auth.destination is not None
        verify_request(
            auth,
            method=request["method"],
            uri=request["uri"],
            destination=auth.destination,
            content=content,
            verify_key=get_verify_key(SIGNING_KEY),
        )
    except MatrixError as exc:
        return exc.status, {"errcode": exc.errcode, "error": str(exc)}
    return 200, {**seen, "origin": auth.origin, "destination": auth.destination}


async def respond(send: Any, status: int, body: Any) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = b"text/html" if isinstance(body, bytes) else b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def stream_forever(send: Any, *, pause: float) -> None:
    """A 200 whose body never ends (chunked, no Content-Length)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": b" " * 1000, "more_body": True})
        await trio.sleep(pause)


@asynccontextmanager
async def open_remote(pki: Pki) -> AsyncIterator[Remote]:
    """Run a `Remote` over TLS on a free loopback port for the duration of the block."""
    remote = Remote()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.certfile = str(pki.cert_file)
    config.keyfile = str(pki.key_file)
    config.accesslog = None
    async with trio.open_nursery() as nursery:

        async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(
                remote.app,
                config,
                shutdown_trigger=trio.sleep_forever,
                task_status=task_status,
                mode="asgi",
            )

        binds: list[str] = await nursery.start(serve)
        remote.port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield remote
        finally:
            nursery.cancel_scope.cancel()


def federation_config(pki: Pki, **overrides: Any) -> FederationConfig:
    """Trusting the test CA, loopback allowed, short timeouts."""
    settings: dict[str, Any] = {
        "ca_file": str(pki.ca_file),
        "ip_range_allowlist": LOOPBACK,
        "request_timeout": 10.0,
    }
    settings.update(overrides)
    return FederationConfig(**settings)


@asynccontextmanager
async def open_client(
    pki: Pki, *, resolver: ServerResolver | None = None, **overrides: Any
) -> AsyncIterator[FederationClient]:
    client = FederationClient(
        federation_config(pki, **overrides),
        server_name=ORIGIN,
        signing_key=SIGNING_KEY,
        resolver=resolver,
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def remote(pki: Pki) -> AsyncIterator[Remote]:
    async with open_remote(pki) as running:
        yield running


@pytest.fixture
async def client(pki: Pki) -> AsyncIterator[FederationClient]:
    async with open_client(pki) as running:
        yield running


# --- Signed requests ----------------------------------------------------------------------


async def test_a_signed_get_reaches_the_remote_and_verifies(
    client: FederationClient, remote: Remote
) -> None:
    destination = f"localhost:{remote.port}"
    path = fed_path("/_matrix/test/echo/{}/{}", "!room:a.org", "a/b c")
    seen = await client.get_json(destination, path, query={"q": "x y", "v": ["1", "é"]})
    # The signed uri is the target exactly as sent, and it verified at the remote.
    assert seen["uri"] == "/_matrix/test/echo/%21room%3Aa.org/a%2Fb%20c?q=x%20y&v=1&v=%C3%A9"
    assert seen["method"] == "GET"
    assert seen["host"] == destination
    assert (seen["origin"], seen["destination"]) == (ORIGIN, destination)
    assert seen["content"] is None
    assert seen["user_agent"].startswith("trioserver/")


async def test_a_signed_put_carries_the_signed_content(
    client: FederationClient, remote: Remote
) -> None:
    content = {"pdus": [{"body": "héllo", "depth": 2**40}], "edus": [], "origin": ORIGIN}
    seen = await client.put_json(f"localhost:{remote.port}", "/_matrix/test/send/1", content)
    assert seen["method"] == "PUT"
    assert seen["content"] == content
    assert seen["origin"] == ORIGIN
    (request,) = remote.received
    assert request["headers"]["content-type"] == "application/json"


async def test_an_unsigned_post_has_no_authorization(
    client: FederationClient, remote: Remote
) -> None:
    seen = await client.post_json(
        f"localhost:{remote.port}", "/_matrix/test/query", {"a": 1}, signed=False
    )
    assert seen["authorization"] is None
    assert seen["content"] == {"a": 1}


async def test_an_ip_literal_destination_is_verified_for_its_ip(
    client: FederationClient, remote: Remote
) -> None:
    destination = f"127.0.0.1:{remote.port}"
    seen = await client.get_json(destination, "/_matrix/test/echo")
    assert (seen["host"], seen["destination"]) == (destination, destination)


async def test_connections_are_kept_alive(client: FederationClient, remote: Remote) -> None:
    destination = f"localhost:{remote.port}"
    first = await client.get_json(destination, "/_matrix/test/echo")
    second = await client.put_json(destination, "/_matrix/test/echo", {})
    assert first["client_port"] == second["client_port"]


# --- Remote errors ------------------------------------------------------------------------


async def test_a_matrix_error_becomes_remote_error(
    client: FederationClient, remote: Remote
) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.get_json(f"localhost:{remote.port}", "/_matrix/test/error")
    error = caught.value
    assert (error.status, error.errcode, error.message) == (403, "M_FORBIDDEN", "not you")
    assert error.body == {"errcode": "M_FORBIDDEN", "error": "not you"}


async def test_a_non_json_error_is_remote_error_without_errcode(
    client: FederationClient, remote: Remote
) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.get_json(f"localhost:{remote.port}", "/_matrix/test/html-error")
    assert (caught.value.status, caught.value.errcode, caught.value.body) == (502, None, None)


async def test_a_2xx_that_is_not_json_is_unreachable(
    client: FederationClient, remote: Remote
) -> None:
    with pytest.raises(DestinationUnreachable, match="not JSON"):
        await client.get_json(f"localhost:{remote.port}", "/_matrix/test/not-json")


# --- TLS and the address policy -----------------------------------------------------------


async def test_an_untrusted_certificate_is_refused(pki: Pki, remote: Remote) -> None:
    async with open_client(pki, ca_file=None) as client:
        with pytest.raises(DestinationUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get_json(f"localhost:{remote.port}", "/_matrix/test/echo")
    assert remote.received == []


async def test_verification_can_be_turned_off_for_tests(pki: Pki, remote: Remote) -> None:
    async with open_client(pki, ca_file=None, verify_tls=False) as client:
        seen = await client.get_json(f"localhost:{remote.port}", "/_matrix/test/echo")
    assert seen["origin"] == ORIGIN


async def test_loopback_is_blocked_by_default(pki: Pki, remote: Remote) -> None:
    async with open_client(pki, ip_range_allowlist=()) as client:
        for destination in [f"localhost:{remote.port}", f"127.0.0.1:{remote.port}"]:
            with pytest.raises(DestinationUnreachable) as caught:
                await client.get_json(destination, "/_matrix/test/echo")
            assert "federation.ip_range_blocklist" in caught.value.reason
            assert "federation.ip_range_allowlist" in caught.value.reason
    assert remote.received == []


# --- Hostile remotes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_matrix/test/big", "/_matrix/test/endless"])
async def test_an_oversized_response_is_refused(
    client: FederationClient, remote: Remote, path: str
) -> None:
    # By its Content-Length, or as soon as a body without one passes the cap.
    with pytest.raises(DestinationUnreachable, match="over 4096"):
        await client.get_json(f"localhost:{remote.port}", path, max_response_bytes=4096)


@pytest.mark.parametrize("path", ["/_matrix/test/hang", "/_matrix/test/drip"])
async def test_a_remote_that_never_finishes_times_out(
    client: FederationClient, remote: Remote, path: str
) -> None:
    # "drip" sends a little every 50 ms: only the whole request's deadline stops it.
    start = trio.current_time()
    with pytest.raises(DestinationUnreachable, match=r"no answer within 0\.5 s"):
        await client.get_json(f"localhost:{remote.port}", path, timeout=0.5)
    assert trio.current_time() - start < 2


async def test_a_server_that_never_speaks_tls_times_out(pki: Pki) -> None:
    async def accept_and_wait(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, accept_and_wait, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with open_client(pki, request_timeout=0.5) as client:
            with pytest.raises(DestinationUnreachable, match=r"no answer within 0\.5 s"):
                await client.get_json(f"localhost:{port}", "/_matrix/test/echo")
        nursery.cancel_scope.cancel()


async def test_a_request_cancelled_during_the_tls_handshake_closes_its_socket(pki: Pki) -> None:
    # A server shutting down cancels its requests wherever they are; one still in its TLS
    # handshake must not leave its socket to the garbage collector (the suite turns the
    # ResourceWarning that would give into an error).
    async def accept_and_wait(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, accept_and_wait, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with open_client(pki) as client:
            with trio.move_on_after(0.3) as scope:
                await client.get_json(f"localhost:{port}", "/_matrix/test/echo")
            assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
    gc.collect()


# --- Destinations refused before anything is sent ----------------------------------------


@pytest.mark.parametrize(
    ("destination", "overrides", "reason"),
    [
        ("bad name", {}, "not a server name"),
        ("example.org:0", {}, "no valid port"),
        ("other.org", {"domain_whitelist": ("allowed.org",)}, "federation.domain_whitelist"),
        ("allowed.org", {"enabled": False}, "federation.enabled"),
    ],
)
async def test_refused_destinations(
    pki: Pki, destination: str, overrides: dict[str, Any], reason: str
) -> None:
    async with open_client(pki, **overrides) as client:
        with pytest.raises(DestinationNotAllowed, match=reason):
            await client.get_json(destination, "/_matrix/test/echo")


# --- Delegation ---------------------------------------------------------------------------


class NoSrv:
    """An SRV lookup that finds nothing, counting lookups."""

    def __init__(self, records: dict[str, list[SrvRecord]] | None = None) -> None:
        self.records = records or {}
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        return self.records.get(name, [])


async def no_well_known(hostname: str) -> WellKnownResponse:
    raise WellKnownUnavailable("no web server in this test")


async def test_well_known_delegation_end_to_end(pki: Pki) -> None:
    # "localhost" has no port: the resolver fetches https://localhost:<A>/.well-known/... (the
    # test's stand-in for port 443) over the same guarded TLS, which delegates to B.
    async with open_remote(pki) as web, open_remote(pki) as homeserver:
        web.well_known = {"m.server": f"localhost:{homeserver.port}"}
        http = federation_http_client(federation_config(pki), user_agent="test")
        srv = NoSrv()
        resolver = ServerResolver(
            fetch_well_known=HttpWellKnownFetcher(http, port=web.port), srv_lookup=srv
        )
        try:
            async with open_client(pki, resolver=resolver) as client:
                for _ in range(2):
                    seen = await client.get_json("localhost", "/_matrix/test/echo")
                    # Signed for the server name; Host is the delegated name with its port.
                    assert seen["destination"] == "localhost"
                    assert seen["host"] == f"localhost:{homeserver.port}"
        finally:
            await http.aclose()
    (fetch,) = web.received  # fetched once, then cached
    assert (fetch["uri"], fetch["headers"]["host"]) == (
        "/.well-known/matrix/server",
        f"localhost:{web.port}",
    )
    assert srv.asked == []
    assert len(homeserver.received) == 2


async def test_the_well_known_fetch_passes_the_deny_list(pki: Pki, remote: Remote) -> None:
    remote.well_known = {"m.server": f"localhost:{remote.port}"}
    config = federation_config(pki, ip_range_allowlist=())
    http = federation_http_client(config, user_agent="test")
    resolver = ServerResolver(
        fetch_well_known=HttpWellKnownFetcher(http, port=remote.port), srv_lookup=NoSrv()
    )
    try:
        async with open_client(pki, resolver=resolver, ip_range_allowlist=()) as client:
            # No delegation (the fetch was refused), so localhost:8448, refused too.
            with pytest.raises(DestinationUnreachable, match=r"federation\.ip_range_blocklist"):
                await client.get_json("localhost", "/_matrix/test/echo")
    finally:
        await http.aclose()
    assert remote.received == []
    assert resolver.cached_delegation("localhost") is None


async def test_srv_delegation_checks_the_certificate_for_the_server_name(
    pki: Pki, remote: Remote
) -> None:
    # Both names' SRV records point at the same host and port; the certificate is valid for
    # srv.test only. other.test must not ride on srv.test's verified pooled connection.
    target = [SrvRecord(0, 0, remote.port, "localhost")]
    srv = NoSrv({"_matrix-fed._tcp.srv.test": target, "_matrix-fed._tcp.other.test": target})
    resolver = ServerResolver(fetch_well_known=no_well_known, srv_lookup=srv)
    async with open_client(pki, resolver=resolver) as client:
        seen = await client.get_json("srv.test", "/_matrix/test/echo")
        assert (seen["host"], seen["destination"]) == ("srv.test", "srv.test")
        with pytest.raises(DestinationUnreachable, match=r"other\.test"):
            await client.get_json("other.test", "/_matrix/test/echo")
    assert len(remote.received) == 1


# --- Route pools --------------------------------------------------------------------------


async def test_idle_route_pools_are_closed_past_the_limit(pki: Pki, remote: Remote) -> None:
    context = federation_ssl_context(federation_config(pki))
    transport = FederationTransport(AddressPolicy([], []), context, max_routes=1)
    localhost = f"https://localhost:{remote.port}/_matrix/test/echo"
    by_ip = f"https://127.0.0.1:{remote.port}/_matrix/test/echo"
    async with httpx.AsyncClient(transport=transport) as http:
        first = (await http.get(localhost)).json()
        assert (await http.get(localhost)).json()["client_port"] == first["client_port"]
        # A route with a response still open is kept although over the limit...
        async with http.stream("GET", localhost) as open_response:
            await http.get(by_ip)  # (another TLS name: another route)
            assert (await open_response.aread()).startswith(b"{")
        # ...and closed once idle, when another route is made.
        await http.get(by_ip)
        await http.get(localhost, extensions={"sni_hostname": "srv.test"})  # a third route
        assert (await http.get(localhost)).json()["client_port"] != first["client_port"]
