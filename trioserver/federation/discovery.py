"""Server discovery: from a server name to where and how to connect.

Theory of operation
-------------------
Server-Server API (v1.16), "Resolving server names". A server name is ``hostname[:port]``
(Appendices, "Server Name"). `ServerResolver.resolve` turns it into a `ResolvedServer`: the
host and port to connect to (a name is resolved to addresses later, by the connection layer,
which checks them against the IP deny-list), the ``Host`` header, and the name the TLS
certificate must be valid for. The steps, in the spec's order:

1. an IP literal: that address, the given port or 8448; Host is the server name;
2. a hostname with an explicit port: that host and port; Host is the server name;
3. otherwise ``GET https://<hostname>/.well-known/matrix/server``. A valid answer names a
   delegated server name ``m.server``, which goes through steps 1 and 2 itself, else SRV
   ``_matrix-fed._tcp.<delegated>``, then the deprecated ``_matrix._tcp.<delegated>``, then
   port 8448 of the delegated hostname; Host and certificate are the delegated hostname;
4. without a valid answer, the same SRV lookups and port 8448 for the hostname itself.

The signed ``X-Matrix`` header still names the original server name: delegation only decides
where to connect.

Well-known answers are cached per hostname, as the spec recommends: a valid one for its
``Cache-Control: max-age`` or ``Expires`` (default 24 h, at most 48 h, and at least 5 min so
that a remote sending ``no-store`` does not make every request fetch it again); an invalid one
(not 200, not a JSON object with a valid ``m.server``) for 1 h; a failed fetch (no
connection, timeout, bad redirect) for 2 min, doubling with each consecutive failure up to 1 h.
While fetches fail, a delegation that was valid keeps being used for up to 2 h past its
expiry: a web server's outage should not send federation traffic to the wrong place. One fetch
per hostname runs at a time; concurrent resolutions wait for it. SRV answers are cached by the
DNS resolver for their TTL.

Both lookups are injected (`SrvLookup`, `WellKnownFetcher`), so every rule is unit-tested with
fakes; the defaults are `DnsSrvLookup` (dnspython on trio) and `HttpWellKnownFetcher` (the
federation client's guarded HTTPS, so the fetch passes the same deny-list and TLS checks).
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

import trio

from trioserver.events import identifiers
from trioserver.events.errors import InvalidIdentifierError
from trioserver.federation.well_known import (
    WellKnownResponse,
    WellKnownUnavailable,
    cache_period,
    parse_well_known,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
# Spec "Resolving server names": errors cached "for up to an hour", backing off when they
# repeat (the bounds for valid answers are in `well_known`).
INVALID_CACHE_PERIOD = 3600.0
FAILED_CACHE_PERIOD = 2 * 60.0  # doubled per consecutive failure, up to INVALID_CACHE_PERIOD
GRACE_PERIOD = 2 * 3600.0
MAX_CACHED_HOSTS = 10_000

_SRV_SERVICES = ("_matrix-fed._tcp", "_matrix._tcp")  # the second one deprecated (v1.8)
_DNS_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")


class InvalidServerName(ValueError):
    """A string that is not a server name by the spec's grammar (Appendices, "Server Name"),
    or not one that can be connected to (see `parse_server_name`)."""


class DiscoveryError(Exception):
    """The server name cannot be resolved: a DNS lookup failed (not "no such record"), or an
    SRV answer says the service is not available."""


@attrs.frozen
class ServerName:
    """A parsed server name.

    Attributes:
        host: the hostname, or the IP address (an IPv6 one without brackets).
        port: the explicit port, or None.
        is_ip: `host` is an IP literal.
    """

    host: str
    port: int | None
    is_ip: bool


def parse_server_name(name: str) -> ServerName:
    """Parse ``hostname[:port]`` (the grammar checked by `trioserver.events.identifiers`) into
    what discovery needs.

    Raises:
        InvalidServerName: `name` does not follow the grammar, its port is 0 or over 65535,
            or it is a dotted quad that is no plain IPv4 address (``01.2.3.4``: octal to some
            resolvers, decimal to others).
    """
    try:
        host, port = identifiers.parse_server_name(name)
    except InvalidIdentifierError:
        raise InvalidServerName(f"{name!r} is not a server name") from None
    if port is not None and not 0 < port < 65536:
        raise InvalidServerName(f"{name!r} has no valid port")
    if host.startswith("["):
        return ServerName(host[1:-1], port, True)
    if _DOTTED_QUAD.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidServerName(f"{name!r} is an ambiguous IPv4 address") from None
        return ServerName(host, port, True)
    return ServerName(host, port, False)


def is_server_name(name: str) -> bool:
    """Whether `name` is a server name discovery can resolve (see `parse_server_name`)."""
    try:
        parse_server_name(name)
    except InvalidServerName:
        return False
    return True


@attrs.frozen
class ResolvedServer:
    """Where and how to send requests for one server name.

    Attributes:
        connect_host: the host name to resolve (A/AAAA) or the IP address to connect to.
        connect_port: the TCP port.
        host_header: the ``Host`` header of requests.
        tls_server_name: the name (or IP address) the certificate must be valid for, and the
            SNI sent (none for an IP address).
    """

    connect_host: str
    connect_port: int
    host_header: str
    tls_server_name: str


@attrs.frozen
class SrvRecord:
    """One SRV answer record; `target` without the final dot, ``"."`` for "no service"."""

    priority: int
    weight: int
    port: int
    target: str


# The SRV records of a name ([] when there are none); raises DiscoveryError when DNS fails.
SrvLookup = Callable[[str], Awaitable[list[SrvRecord]]]
# The well-known answer of a hostname; raises WellKnownUnavailable.
WellKnownFetcher = Callable[[str], Awaitable[WellKnownResponse]]


@attrs.frozen
class _Cached:
    server: str | None  # the delegated server name; None: no (valid) delegation
    expires_at: float
    keep_until: float  # a delegation is kept past expiry while fetches fail, until then
    failures: int  # consecutive failed fetches


class ServerResolver:
    """Resolves server names (see the module docstring), caching well-known answers."""

    def __init__(
        self,
        *,
        fetch_well_known: WellKnownFetcher,
        srv_lookup: SrvLookup | None = None,
        rng: random.Random | None = None,
        max_cached: int = MAX_CACHED_HOSTS,
    ) -> None:
        self._fetch_well_known = fetch_well_known
        self._srv_lookup = srv_lookup if srv_lookup is not None else DnsSrvLookup()
        self._rng = rng if rng is not None else random.Random()
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._locks: dict[str, trio.Lock] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        """Where to connect for `server_name`.

        Raises:
            InvalidServerName: `server_name` is not a server name.
            DiscoveryError: a DNS lookup failed, or SRV says there is no service.

        Checkpoint: yes when a lookup is needed (well-known not cached, or SRV).
        """
        name = parse_server_name(server_name)
        if name.is_ip or name.port is not None:
            return _direct(name, server_name)  # steps 1 and 2
        delegated = await self._delegation(name.host)
        if delegated is not None:
            target = parse_server_name(delegated)  # checked before it was cached
            if target.is_ip or target.port is not None:
                return _direct(target, delegated)  # steps 3.1 and 3.2
            return await self._via_srv(target.host)  # steps 3.3 to 3.5
        return await self._via_srv(name.host)  # steps 4 to 6

    def cached_delegation(self, hostname: str) -> str | None:
        """The cached, unexpired delegated server name of `hostname`, if any (for tests and
        diagnostics)."""
        cached = self._cache.get(hostname)
        if cached is None or trio.current_time() >= cached.expires_at:
            return None
        return cached.server

    async def _via_srv(self, host: str) -> ResolvedServer:
        for service in _SRV_SERVICES:
            records = await self._srv_lookup(f"{service}.{host}")
            if records:
                usable = [r for r in records if r.target != "." and _DNS_NAME.fullmatch(r.target)]
                if not usable:
                    raise DiscoveryError(f"{service}.{host} names no Matrix server")
                chosen = pick_srv(usable, self._rng)
                return ResolvedServer(chosen.target, chosen.port, host, host)
        return ResolvedServer(host, DEFAULT_PORT, host, host)

    async def _delegation(self, host: str) -> str | None:
        cached = self._cache.get(host)
        if cached is not None and trio.current_time() < cached.expires_at:
            self._cache.move_to_end(host)
            return cached.server
        lock = self._locks.setdefault(host, trio.Lock())
        try:
            async with lock:
                # Another task may have fetched it while this one waited.
                cached = self._cache.get(host)
                if cached is not None and trio.current_time() < cached.expires_at:
                    return cached.server
                entry = await self._fetch(host, cached)
                self._store(host, entry)
                return entry.server
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(host, None)

    async def _fetch(self, host: str, previous: _Cached | None) -> _Cached:
        try:
            response = await self._fetch_well_known(host)
        except WellKnownUnavailable as exc:
            failures = previous.failures + 1 if previous is not None else 1
            period = min(INVALID_CACHE_PERIOD, FAILED_CACHE_PERIOD * 2 ** (failures - 1))
            now = trio.current_time()
            logger.info("No .well-known/matrix/server from %s: %s", host, exc)
            if previous is not None and previous.server is not None and now < previous.keep_until:
                return _Cached(previous.server, now + period, previous.keep_until, failures)
            return _Cached(None, now + period, now + period, failures)
        now = trio.current_time()
        server = parse_well_known(response)
        if server is None or not is_server_name(server):
            return _Cached(None, now + INVALID_CACHE_PERIOD, now + INVALID_CACHE_PERIOD, 0)
        expires_at = now + cache_period(response.headers)
        return _Cached(server, expires_at, expires_at + GRACE_PERIOD, 0)

    def _store(self, host: str, entry: _Cached) -> None:
        self._cache[host] = entry
        self._cache.move_to_end(host)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)


def _direct(name: ServerName, as_given: str) -> ResolvedServer:
    # Steps 1/2 and 3.1/3.2: the Host header is the (delegated) server name as written,
    # with its port when it has one; the certificate is checked for the hostname or the IP.
    port = name.port if name.port is not None else DEFAULT_PORT
    return ResolvedServer(name.host, port, as_given, name.host)


def pick_srv(records: Sequence[SrvRecord], rng: random.Random) -> SrvRecord:
    """The record to use (RFC 2782): the lowest priority, then a random pick weighted by
    `weight` (zero-weight records have a small chance)."""
    lowest = min(r.priority for r in records)
    candidates = sorted((r for r in records if r.priority == lowest), key=lambda r: r.weight)
    total = sum(r.weight for r in candidates)
    chosen = rng.randint(0, total)
    running = 0
    for record in candidates:
        running += record.weight
        if running >= chosen:
            return record
    return candidates[-1]  # unreachable: running ends at total


class DnsSrvLookup:
    """SRV lookups with dnspython's async resolver on trio; answers cached for their TTL.

    Args:
        nameservers: the DNS servers to ask (default: the system's, from resolv.conf).
        port: their port (tests run a DNS server on loopback).
        lifetime: seconds one lookup may take, retries included.
    """

    def __init__(
        self, *, nameservers: Sequence[str] | None = None, port: int = 53, lifetime: float = 10.0
    ) -> None:
        self._nameservers = None if nameservers is None else list(nameservers)
        self._port = port
        self._lifetime = lifetime
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _dns(self) -> dns.asyncresolver.Resolver:
        # Configured on first use (it reads resolv.conf): a server that only ever talks to
        # names with ports, or delegated to ports, never needs it.
        if self._resolver is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=self._nameservers is None)
            except dns.resolver.NoResolverConfiguration as exc:
                raise DiscoveryError(f"no DNS resolver configured: {exc}") from None
            if self._nameservers is not None:
                resolver.nameservers = self._nameservers
                resolver.port = self._port
            resolver.cache = dns.resolver.LRUCache(MAX_CACHED_HOSTS)
            self._resolver = resolver
        return self._resolver

    async def __call__(self, name: str) -> list[SrvRecord]:
        """The SRV records of `name`; [] when it has none (NXDOMAIN, no SRV answer).

        Raises:
            DiscoveryError: the lookup failed (timeout, no answering server, bad answer).

        Checkpoint: yes.
        """
        try:
            answer = await self._dns().resolve(
                name, "SRV", lifetime=self._lifetime, backend=dns.asyncbackend.get_backend("trio")
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"SRV lookup of {name} failed: {exc}") from None
        return [_srv_record(rdata) for rdata in answer]


def _srv_record(rdata: Any) -> SrvRecord:
    # Any: dnspython types answer rdata as the generic Rdata; these are its SRV ones.
    target: dns.name.Name = rdata.target
    name = "." if target == dns.name.root else target.to_text(omit_final_dot=True)
    return SrvRecord(rdata.priority, rdata.weight, rdata.port, name)
