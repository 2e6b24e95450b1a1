"""Outbound federation connections: checked addresses, verified TLS, pooled per server.

Theory of operation
-------------------
Which servers this one talks to is chosen by other people (a room's members), so, as in
`trioserver.guarded_http`, every host is resolved once, its addresses checked against
``federation.ip_range_blocklist`` / ``federation.ip_range_allowlist``, and the connection made
to a checked address: a DNS answer that changes between the check and the connection cannot
slip past it. The permitted addresses are tried in the resolver's order while connecting
fails (a host without IPv6 routes still reaches a dual-stack server over IPv4); nothing has
been sent when a connection fails, so this never repeats a request.

The certificate is verified for the request's ``sni_hostname`` extension, the TLS server name
discovery chose (the server name's hostname, or the delegated one; none is sent for an IP
address, whose certificate must name the IP), defaulting to the URL's host. The SSL context
trusts the system's CAs plus ``federation.ca_file``.

Connections are pooled (keep-alive) per route, ``(TLS server name, host, port)``: one httpx
pool, sharing the one SSL context, for each. A pool keyed by address alone would reuse a
connection verified for one server name for another name served from the same address (a
hosting provider's SRV targets), which is exactly what the certificate check must prevent.
At most `max_routes` pools are kept; past that, the least recently used idle pools (no
request or response in progress) are closed.
"""

from __future__ import annotations

import collections
import ssl
from typing import TYPE_CHECKING, Any

import attrs
import httpcore
import httpx

import trio

from trioserver.guarded_http import (
    AddressBlocked,
    AddressPolicy,
    is_ip_literal,
    parse_networks,
    resolve_addresses,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from trioserver.config import FederationConfig

BLOCKLIST_KEY = "federation.ip_range_blocklist"
ALLOWLIST_KEY = "federation.ip_range_allowlist"
MAX_ROUTES = 256
# Per route: a few idle connections kept for a minute (a sender's transactions come every
# few seconds while a room is busy). Idle connections past their expiry are closed when the
# pool is next used, or when the pool is evicted.
ROUTE_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=2, keepalive_expiry=60)


def federation_ssl_context(config: FederationConfig) -> ssl.SSLContext:
    """The client TLS context: the system's CAs plus ``config.ca_file``, TLS 1.2 or later;
    no verification at all when ``config.verify_tls`` is off (tests only).

    Raises:
        OSError: ``ca_file`` cannot be read.
        ssl.SSLError: ``ca_file`` holds no valid PEM certificate.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ca_file is not None:
        context.load_verify_locations(cafile=config.ca_file)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def federation_http_client(config: FederationConfig, *, user_agent: str) -> httpx.AsyncClient:
    """An httpx client over a `FederationTransport` built from `config`: the address policy,
    the SSL context, ``federation.request_timeout``; no redirects, no environment proxy, no
    compression (a compressed body could outgrow a size cap before it is checked).

    Raises:
        OSError, ssl.SSLError: ``ca_file`` cannot be loaded.
    """
    policy = AddressPolicy(
        parse_networks(config.ip_range_blocklist), parse_networks(config.ip_range_allowlist)
    )
    return httpx.AsyncClient(
        transport=FederationTransport(policy, federation_ssl_context(config)),
        timeout=httpx.Timeout(config.request_timeout),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
    )


def phase_timeout(deadline: float) -> httpx.Timeout:
    """httpx's per-phase timeouts (connect and TLS handshake, each read and write, the pool
    wait) for a request that must end by `deadline` (``trio.current_time()`` based).

    They end a little before the deadline, which stays the bound on the whole request (a
    remote dripping bytes never trips a per-read timeout): httpcore abandons a TLS handshake
    cleanly only on its own timeout. Cancelled from outside, its trio backend leaves the
    socket open for the garbage collector.
    """
    remaining = deadline - trio.current_time()
    return httpx.Timeout(max(remaining - min(1.0, remaining / 10), 0.001))


async def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The raw (undecoded) body of `response`, or None when it is over `limit` bytes: a larger
    ``Content-Length`` is not read at all, a longer body is cut off as soon as it passes.

    Checkpoint: yes.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                # Stop reading: close the connection, then let the iteration fail on the
                # closed stream. That ends each of httpx's nested async generators; leaving
                # the loop instead would leave them suspended, to be finalised (with a
                # ResourceWarning) by the garbage collector.
                await response.aclose()
            else:
                chunks.append(chunk)
    except (httpx.HTTPError, httpx.StreamError):  # ReadError or StreamClosed, once closed
        if size <= limit:
            raise
    return None if size > limit else b"".join(chunks)


@attrs.define(eq=False)
class _Route:
    transport: httpx.AsyncHTTPTransport
    in_use: int = 0  # requests being sent, and responses not yet closed


class FederationTransport(httpx.AsyncBaseTransport):
    """An httpx transport for outbound federation (see the module docstring).

    Args:
        policy: the addresses connections may go to.
        ssl_context: verifies every server's certificate.
        max_routes: how many per-route pools to keep.
    """

    def __init__(
        self, policy: AddressPolicy, ssl_context: ssl.SSLContext, *, max_routes: int = MAX_ROUTES
    ) -> None:
        self._policy = policy
        self._ssl_context = ssl_context
        self._max_routes = max_routes
        self._routes: collections.OrderedDict[tuple[str, str, int], _Route] = (
            collections.OrderedDict()
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Resolve, check, and send `request` over the route's pool.

        Raises:
            AddressBlocked: the host resolves only to refused addresses.
            httpx.ConnectError: the host does not resolve, or no permitted address connects.
            httpx.UnsupportedProtocol: not an https URL.

        Checkpoint: yes.
        """
        url = request.url
        if url.scheme != "https":
            raise httpx.UnsupportedProtocol("federation is HTTPS only", request=request)
        port = url.port or 443
        server_name = request.extensions.get("sni_hostname") or url.host
        permitted = await self._permitted(request, url.host, port)
        route = await self._route((server_name, url.host, port))
        request.extensions = {**request.extensions, "sni_hostname": server_name}
        route.in_use += 1  # from here until the response is closed: never evicted meanwhile
        try:
            response = await self._send(route, request, url, permitted)
        except BaseException:
            route.in_use -= 1
            raise
        response.stream = _Tracked(response.stream, route)
        return response

    @staticmethod
    async def _send(
        route: _Route, request: httpx.Request, url: httpx.URL, permitted: list[str]
    ) -> httpx.Response:
        for address in permitted[:-1]:
            request.url = url.copy_with(host=address)
            try:
                return await route.transport.handle_async_request(request)
            except httpx.ConnectError:
                continue  # nothing was sent: the next address may connect
        request.url = url.copy_with(host=permitted[-1])
        return await route.transport.handle_async_request(request)

    async def _permitted(self, request: httpx.Request, host: str, port: int) -> list[str]:
        try:
            addresses = await resolve_addresses(host, port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror; idna's, for a bad name
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from None
        permitted = [str(a) for a in addresses if self._policy.permits(a)]
        if not permitted:
            raise AddressBlocked(
                f"{host} is in {BLOCKLIST_KEY} (allow it with {ALLOWLIST_KEY})",
                request=request,
                literal=is_ip_literal(host),
            )
        return permitted

    async def _route(self, key: tuple[str, str, int]) -> _Route:
        route = self._routes.get(key)
        if route is not None:
            self._routes.move_to_end(key)
            return route
        route = _Route(_route_transport(self._ssl_context))
        self._routes[key] = route
        await self._evict_idle(keep=key)
        return route

    async def _evict_idle(self, *, keep: tuple[str, str, int]) -> None:
        excess = len(self._routes) - self._max_routes
        if excess <= 0:
            return
        idle = [k for k, r in self._routes.items() if r.in_use == 0 and k != keep]
        for key in idle[:excess]:
            await self._routes.pop(key).transport.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        routes, self._routes = list(self._routes.values()), collections.OrderedDict()
        for route in routes:
            await route.transport.aclose()


class _Tracked(httpx.AsyncByteStream):
    """A response body that keeps its route in use until closed (eviction skips it)."""

    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, route: _Route) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)  # an async transport's response
        self._inner = inner
        self._route: _Route | None = route

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._route is not None:
                self._route.in_use -= 1
                self._route = None


# httpcore's interface names its arguments `timeout` (ASYNC109 does not apply to overrides).
class _ClosingTlsStream(httpcore.AsyncNetworkStream):
    """A trio stream whose TLS handshake closes the socket when it is cancelled.

    httpcore 1.0's trio backend closes the socket when the handshake fails with an
    exception, but not when it is cancelled (``trio.Cancelled`` is a BaseException): a
    request cancelled during its handshake (a server shutting down, a caller's deadline)
    then leaves the socket to the garbage collector.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            with trio.CancelScope(shield=True):  # closing a socket: never blocks for long
                await self._inner.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TrioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, with `_ClosingTlsStream` streams."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _ClosingTlsStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("federation does not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _route_transport(ssl_context: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=ROUTE_LIMITS)
    # httpx takes no network backend, so its pool is replaced by the same pool on
    # `_TrioBackend` (httpx is pinned below 0.29, where `_pool` is this pool).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=ROUTE_LIMITS.max_connections,
        max_keepalive_connections=ROUTE_LIMITS.max_keepalive_connections,
        keepalive_expiry=ROUTE_LIMITS.keepalive_expiry,
        network_backend=_TrioBackend(),
    )
    return transport
