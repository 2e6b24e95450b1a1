"""Server discovery (Server-Server API v1.16, "Resolving server names"), rule by rule, with
fake SRV and well-known lookups; the default well-known fetcher over httpx's MockTransport;
the default SRV lookup against a DNS server on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import httpx
import orjson
import pytest

import trio
import trio.testing

from trioserver.federation.discovery import (
    DiscoveryError,
    DnsSrvLookup,
    InvalidServerName,
    ResolvedServer,
    ServerName,
    ServerResolver,
    SrvRecord,
    parse_server_name,
    pick_srv,
)
from trioserver.federation.well_known import (
    DEFAULT_CACHE_PERIOD,
    MAX_CACHE_PERIOD,
    MIN_CACHE_PERIOD,
    HttpWellKnownFetcher,
    WellKnownResponse,
    WellKnownUnavailable,
    cache_period,
)

HOUR = 3600.0


class FakeSrv:
    """SRV answers by name; names in `failing` fail as DNS errors."""

    def __init__(self, records: dict[str, list[SrvRecord]] | None = None) -> None:
        self.records = records or {}
        self.failing: set[str] = set()
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        if name in self.failing:
            raise DiscoveryError(f"SERVFAIL for {name}")
        return list(self.records.get(name, []))


class FakeWellKnown:
    """Well-known answers by hostname (404 when not set); an exception is raised instead."""

    def __init__(self) -> None:
        self.answers: dict[str, WellKnownResponse | Exception] = {}
        self.asked: list[str] = []
        self.gate: trio.Event | None = None  # when set, every fetch waits for it

    async def __call__(self, hostname: str) -> WellKnownResponse:
        self.asked.append(hostname)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(hostname, WellKnownResponse(404, {}, b""))
        if isinstance(answer, Exception):
            raise answer
        return answer


def delegating(server: Any, **headers: str) -> WellKnownResponse:
    """A 200 answer with ``{"m.server": server}``; header names use _ for -."""
    lowered = {k.replace("_", "-"): v for k, v in headers.items()}
    return WellKnownResponse(200, lowered, orjson.dumps({"m.server": server}))


@pytest.fixture
def srv() -> FakeSrv:
    return FakeSrv()


@pytest.fixture
def well_known() -> FakeWellKnown:
    return FakeWellKnown()


@pytest.fixture
def resolver(srv: FakeSrv, well_known: FakeWellKnown) -> ServerResolver:
    return ServerResolver(fetch_well_known=well_known, srv_lookup=srv)


# --- Server names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("example.org", ServerName("example.org", None, False)),
        ("example.org:8448", ServerName("example.org", 8448, False)),
        ("1.2.3.4", ServerName("1.2.3.4", None, True)),
        ("1.2.3.4:65535", ServerName("1.2.3.4", 65535, True)),
        ("[2001:db8::1]", ServerName("2001:db8::1", None, True)),
        ("[2001:db8::1]:1", ServerName("2001:db8::1", 1, True)),
        ("localhost", ServerName("localhost", None, False)),
        ("1.2.3", ServerName("1.2.3", None, False)),  # a DNS name by the grammar
    ],
)
def test_server_names(name: str, parsed: ServerName) -> None:
    assert parse_server_name(name) == parsed


@pytest.mark.parametrize(
    "name",
    [
        "",
        "example.org:",
        "example.org:0",
        "example.org:65536",
        "example.org:123456",
        "example.org:80a",
        "exa mple.org",
        "exämple.org",
        "user@example.org",
        "example.org/path",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[fe80::1%eth0]",
        "[not:an:ip]",
        "2001:db8::1",  # unbracketed IPv6
        "256.1.1.1",
        "01.2.3.4",  # octal to some resolvers
    ],
)
def test_invalid_server_names(name: str) -> None:
    with pytest.raises(InvalidServerName):
        parse_server_name(name)


# --- Steps 1 and 2: no lookup at all ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "resolved"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")),
        ("1.2.3.4:99", ResolvedServer("1.2.3.4", 99, "1.2.3.4:99", "1.2.3.4")),
        ("[2001:db8::1]", ResolvedServer("2001:db8::1", 8448, "[2001:db8::1]", "2001:db8::1")),
        ("[2001:db8::1]:9", ResolvedServer("2001:db8::1", 9, "[2001:db8::1]:9", "2001:db8::1")),
        (
            "example.org:1234",
            ResolvedServer("example.org", 1234, "example.org:1234", "example.org"),
        ),
    ],
)
async def test_ip_literals_and_explicit_ports_connect_directly(
    resolver: ServerResolver,
    srv: FakeSrv,
    well_known: FakeWellKnown,
    name: str,
    resolved: ResolvedServer,
) -> None:
    well_known.answers[name.rsplit(":", 1)[0]] = delegating("elsewhere.org:1")
    assert await resolver.resolve(name) == resolved
    assert well_known.asked == []
    assert srv.asked == []


async def test_an_invalid_server_name_is_refused(resolver: ServerResolver) -> None:
    with pytest.raises(InvalidServerName):
        await resolver.resolve("exa mple.org")


# --- Step 3: a well-known delegation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("delegated", "resolved"),
    [
        # 3.1: an IP literal, Host the delegated name as written.
        ("5.6.7.8", ResolvedServer("5.6.7.8", 8448, "5.6.7.8", "5.6.7.8")),
        ("5.6.7.8:9", ResolvedServer("5.6.7.8", 9, "5.6.7.8:9", "5.6.7.8")),
        ("[2001:db8::2]:9", ResolvedServer("2001:db8::2", 9, "[2001:db8::2]:9", "2001:db8::2")),
        # 3.2: a hostname with a port, Host with that port, certificate for the hostname.
        (
            "matrix.example.org:443",
            ResolvedServer(
                "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org"
            ),
        ),
    ],
)
async def test_delegation_to_an_ip_or_explicit_port(
    resolver: ServerResolver,
    srv: FakeSrv,
    well_known: FakeWellKnown,
    delegated: str,
    resolved: ResolvedServer,
) -> None:
    well_known.answers["example.org"] = delegating(delegated)
    assert await resolver.resolve("example.org") == resolved
    assert well_known.asked == ["example.org"]
    assert srv.asked == []


async def test_delegation_without_port_uses_matrix_fed_srv(
    resolver: ServerResolver, srv: FakeSrv, well_known: FakeWellKnown
) -> None:
    # 3.3: the SRV target is connected to; Host and certificate stay the delegated name.
    well_known.answers["example.org"] = delegating("matrix.example.org")
    srv.records["_matrix-fed._tcp.matrix.example.org"] = [SrvRecord(10, 0, 8000, "srv.host")]
    srv.records["_matrix-fed._tcp.example.org"] = [SrvRecord(10, 0, 1, "not.this")]
    resolved = await resolver.resolve("example.org")
    assert resolved == ResolvedServer("srv.host", 8000, "matrix.example.org", "matrix.example.org")
    assert srv.asked == ["_matrix-fed._tcp.matrix.example.org"]


async def test_delegation_falls_back_to_the_deprecated_matrix_srv(
    resolver: ServerResolver, srv: FakeSrv, well_known: FakeWellKnown
) -> None:
    # 3.4 [Deprecated]: _matrix._tcp when there is no _matrix-fed._tcp record.
    well_known.answers["example.org"] = delegating("matrix.example.org")
    srv.records["_matrix._tcp.matrix.example.org"] = [SrvRecord(10, 0, 8001, "old.host")]
    resolved = await resolver.resolve("example.org")
    assert resolved == ResolvedServer("old.host", 8001, "matrix.example.org", "matrix.example.org")
    assert srv.asked == ["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"]


async def test_delegation_without_srv_uses_port_8448(
    resolver: ServerResolver, srv: FakeSrv, well_known: FakeWellKnown
) -> None:
    # 3.5: the delegated hostname on 8448.
    well_known.answers["example.org"] = delegating("matrix.example.org")
    resolved = await resolver.resolve("example.org")
    assert resolved == ResolvedServer(
        "matrix.example.org", 8448, "matrix.example.org", "matrix.example.org"
    )
    assert len(srv.asked) == 2


# --- Steps 4 to 6: no (valid) well-known ------------------------------------------------------

INVALID_ANSWERS: list[WellKnownResponse | Exception] = [
    WellKnownResponse(404, {}, b""),
    WellKnownResponse(500, {}, b""),
    WellKnownResponse(200, {}, b"not json"),
    WellKnownResponse(200, {}, b'["m.server"]'),
    WellKnownResponse(200, {}, b"{}"),
    WellKnownResponse(200, {}, b'{"m.server": 5}'),
    delegating("bad name!"),
    delegating("matrix.example.org:0"),
    delegating("01.2.3.4"),
    WellKnownUnavailable("connection refused"),
]


@pytest.mark.parametrize("answer", INVALID_ANSWERS)
async def test_invalid_well_known_falls_back_to_srv_of_the_hostname(
    resolver: ServerResolver, srv: FakeSrv, well_known: FakeWellKnown, answer: Any
) -> None:
    # Step 4: _matrix-fed._tcp.<hostname>; Host and certificate are the hostname.
    well_known.answers["example.org"] = answer
    srv.records["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 8009, "fed.host")]
    resolved = await resolver.resolve("example.org")
    assert resolved == ResolvedServer("fed.host", 8009, "example.org", "example.org")


async def test_no_well_known_then_deprecated_srv_then_8448(
    resolver: ServerResolver, srv: FakeSrv
) -> None:
    # Step 5 [Deprecated]: _matrix._tcp.<hostname>; step 6: the hostname on 8448.
    srv.records["_matrix._tcp.example.org"] = [SrvRecord(0, 0, 8010, "old.host")]
    assert await resolver.resolve("example.org") == ResolvedServer(
        "old.host", 8010, "example.org", "example.org"
    )
    assert await resolver.resolve("other.org") == ResolvedServer(
        "other.org", 8448, "other.org", "other.org"
    )
    assert srv.asked[-2:] == ["_matrix-fed._tcp.other.org", "_matrix._tcp.other.org"]


async def test_srv_saying_no_service_is_unreachable(
    resolver: ServerResolver, srv: FakeSrv
) -> None:
    # RFC 2782: a target of "." means the service is decidedly not available.
    srv.records["_matrix-fed._tcp.example.org"] = [SrvRecord(0, 0, 0, ".")]
    with pytest.raises(DiscoveryError, match="no Matrix server"):
        await resolver.resolve("example.org")


async def test_srv_targets_that_are_not_host_names_are_skipped(
    resolver: ServerResolver, srv: FakeSrv
) -> None:
    srv.records["_matrix-fed._tcp.example.org"] = [
        SrvRecord(0, 0, 1, "bad_name"),
        SrvRecord(5, 0, 2, "good.host"),
    ]
    assert (await resolver.resolve("example.org")).connect_host == "good.host"


async def test_a_dns_failure_is_a_discovery_error(resolver: ServerResolver, srv: FakeSrv) -> None:
    # A failed lookup is not "no record": falling through to 8448 could reach the wrong host.
    srv.failing.add("_matrix-fed._tcp.example.org")
    with pytest.raises(DiscoveryError, match="SERVFAIL"):
        await resolver.resolve("example.org")


class FixedRandom(random.Random):
    """`randint` returns `value`."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randint(self, a: int, b: int) -> int:
        assert a <= self.value <= b
        return self.value


def test_srv_lowest_priority_wins() -> None:
    records = [SrvRecord(20, 100, 1, "b"), SrvRecord(10, 1, 2, "a"), SrvRecord(30, 5, 3, "c")]
    assert pick_srv(records, random.Random(1)).target == "a"


def test_srv_weights_within_a_priority() -> None:
    # RFC 2782: zero-weight records first, then running sums against a random 0..total.
    records = [
        SrvRecord(0, 3, 1, "heavy"),
        SrvRecord(0, 1, 2, "light"),
        SrvRecord(0, 0, 3, "zero"),
    ]
    assert [pick_srv(records, FixedRandom(n)).target for n in range(5)] == [
        "zero",
        "light",
        "heavy",
        "heavy",
        "heavy",
    ]
    rng = random.Random(7)
    picks = [pick_srv(records[:2], rng).target for _ in range(4000)]
    assert 0.2 < picks.count("light") / len(picks) < 0.5  # 2 of 5 draws (0 and 1) of 0..4


# --- Caching ----------------------------------------------------------------------------------


async def resolutions_fetch(
    resolver: ServerResolver, well_known: FakeWellKnown, name: str = "example.org"
) -> int:
    """How many well-known fetches one resolution of `name` made."""
    before = len(well_known.asked)
    await resolver.resolve(name)
    return len(well_known.asked) - before


@pytest.mark.parametrize(
    ("headers", "period"),
    [
        ({}, DEFAULT_CACHE_PERIOD),
        ({"cache_control": "max-age=600"}, 600.0),
        ({"cache_control": "public, max-age=7200"}, 7200.0),
        ({"cache_control": "max-age=9999999"}, MAX_CACHE_PERIOD),
        ({"cache_control": "no-store"}, MIN_CACHE_PERIOD),
        (
            {"date": "Mon, 01 Jan 2024 00:00:00 GMT", "expires": "Mon, 01 Jan 2024 03:00:00 GMT"},
            3 * HOUR,
        ),
    ],
)
async def test_a_valid_delegation_is_cached_per_its_headers(
    autojump_clock: trio.testing.MockClock,
    resolver: ServerResolver,
    well_known: FakeWellKnown,
    headers: dict[str, str],
    period: float,
) -> None:
    well_known.answers["example.org"] = delegating("m.example.org:443", **headers)
    assert await resolutions_fetch(resolver, well_known) == 1
    await trio.sleep(period - 1)
    assert await resolutions_fetch(resolver, well_known) == 0
    assert resolver.cached_delegation("example.org") == "m.example.org:443"
    await trio.sleep(2)
    assert resolver.cached_delegation("example.org") is None
    assert await resolutions_fetch(resolver, well_known) == 1


def test_cache_period_from_expires() -> None:
    # Against Date when present, else the wall clock given; an invalid Expires is expired.
    expires = {"expires": "Mon, 01 Jan 2024 01:00:00 GMT"}
    midnight = 1704067200.0  # 2024-01-01T00:00:00Z
    assert cache_period(expires, now=midnight) == HOUR
    assert cache_period({"expires": "0"}, now=midnight) == MIN_CACHE_PERIOD
    assert cache_period({"cache_control": "max-age=x"}, now=midnight) == DEFAULT_CACHE_PERIOD
    # max-age wins over Expires (RFC 9111 5.3).
    both = {**expires, "cache-control": "max-age=7200"}
    assert cache_period(both, now=midnight) == 2 * HOUR


async def test_an_invalid_answer_is_cached_for_an_hour(
    autojump_clock: trio.testing.MockClock, resolver: ServerResolver, well_known: FakeWellKnown
) -> None:
    assert await resolutions_fetch(resolver, well_known) == 1  # 404
    await trio.sleep(HOUR - 1)
    assert await resolutions_fetch(resolver, well_known) == 0
    await trio.sleep(2)
    assert await resolutions_fetch(resolver, well_known) == 1


async def test_failed_fetches_back_off_exponentially_up_to_an_hour(
    autojump_clock: trio.testing.MockClock, resolver: ServerResolver, well_known: FakeWellKnown
) -> None:
    well_known.answers["example.org"] = WellKnownUnavailable("timed out")
    assert await resolutions_fetch(resolver, well_known) == 1
    for period in [120, 240, 480, 960, 1920, 3600, 3600]:
        await trio.sleep(period - 1)
        assert await resolutions_fetch(resolver, well_known) == 0
        await trio.sleep(1)
        assert await resolutions_fetch(resolver, well_known) == 1
    # A valid answer ends the back-off.
    well_known.answers["example.org"] = delegating("m.example.org:443")
    await trio.sleep(HOUR)
    assert await resolutions_fetch(resolver, well_known) == 1
    assert resolver.cached_delegation("example.org") == "m.example.org:443"


async def test_a_valid_delegation_outlives_failed_refetches_for_a_while(
    autojump_clock: trio.testing.MockClock, resolver: ServerResolver, well_known: FakeWellKnown
) -> None:
    well_known.answers["example.org"] = delegating(
        "m.example.org:443", cache_control="max-age=600"
    )
    await resolver.resolve("example.org")
    well_known.answers["example.org"] = WellKnownUnavailable("connection refused")
    await trio.sleep(601)
    resolved = await resolver.resolve("example.org")
    assert (resolved.connect_host, resolved.connect_port) == ("m.example.org", 443)
    assert len(well_known.asked) == 2
    # Up to 2 h past its expiry; then the server is treated as having no delegation.
    await trio.sleep(2 * HOUR)
    resolved = await resolver.resolve("example.org")
    assert (resolved.connect_host, resolved.connect_port) == ("example.org", 8448)


async def test_an_invalid_answer_ends_a_delegation_at_once(
    autojump_clock: trio.testing.MockClock, resolver: ServerResolver, well_known: FakeWellKnown
) -> None:
    well_known.answers["example.org"] = delegating(
        "m.example.org:443", cache_control="max-age=600"
    )
    await resolver.resolve("example.org")
    well_known.answers["example.org"] = WellKnownResponse(404, {}, b"")
    await trio.sleep(601)
    assert (await resolver.resolve("example.org")).connect_host == "example.org"


async def test_concurrent_resolutions_share_one_fetch(
    resolver: ServerResolver, well_known: FakeWellKnown
) -> None:
    well_known.answers["example.org"] = delegating("m.example.org:443")
    well_known.gate = trio.Event()
    results: list[ResolvedServer] = []

    async def resolve() -> None:
        results.append(await resolver.resolve("example.org"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(resolve)
        await trio.testing.wait_all_tasks_blocked()
        well_known.gate.set()
    assert well_known.asked == ["example.org"]
    assert {r.host_header for r in results} == {"m.example.org:443"}


async def test_the_cache_is_bounded(srv: FakeSrv, well_known: FakeWellKnown) -> None:
    resolver = ServerResolver(fetch_well_known=well_known, srv_lookup=srv, max_cached=2)
    for name in ["a.org", "b.org", "c.org"]:
        await resolver.resolve(name)
    assert await resolutions_fetch(resolver, well_known, "c.org") == 0
    assert await resolutions_fetch(resolver, well_known, "a.org") == 1  # the oldest, dropped


# --- The default well-known fetcher -----------------------------------------------------------

Handler = Callable[[httpx.Request], Any]


def fetcher(handler: Handler, **options: Any) -> HttpWellKnownFetcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return HttpWellKnownFetcher(client, **options)


def raw_response(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    """A response streamed as from the network (httpx reads a `content=` body at once)."""
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=headers)


def json_response(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return raw_response(200, orjson.dumps(body), headers)


async def test_fetcher_gets_the_well_known_url() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return json_response({"m.server": "m.example.org:443"}, {"Cache-Control": "max-age=60"})

    response = await fetcher(handler)("example.org")
    assert response.status == 200
    assert orjson.loads(response.body) == {"m.server": "m.example.org:443"}
    assert response.headers["cache-control"] == "max-age=60"
    await fetcher(handler, port=8443)("example.org")
    assert seen == [
        "https://example.org/.well-known/matrix/server",
        "https://example.org:8443/.well-known/matrix/server",
    ]


async def test_fetcher_follows_https_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "example.org":
            return httpx.Response(301, headers={"Location": "https://www.example.org/wk"})
        if request.url.path == "/wk":
            return httpx.Response(302, headers={"Location": "/final"})
        return json_response({"m.server": "m.example.org"})

    response = await fetcher(handler)("example.org")
    assert orjson.loads(response.body) == {"m.server": "m.example.org"}


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://example.org/.well-known/matrix/server", "not https"),
        ("/.well-known/matrix/server", "loop"),
    ],
)
async def test_fetcher_refuses_bad_redirects(location: str, reason: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": location})

    with pytest.raises(WellKnownUnavailable, match=reason):
        await fetcher(handler)("example.org")


async def test_fetcher_stops_after_a_few_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        hop = int(request.url.params.get("hop", "0"))
        return httpx.Response(302, headers={"Location": f"?hop={hop + 1}"})

    with pytest.raises(WellKnownUnavailable, match="more than 5 redirects"):
        await fetcher(handler)("example.org")


async def test_fetcher_returns_errors_without_their_body() -> None:
    response = await fetcher(lambda request: raw_response(404, b"x" * 10**6))("h.org")
    assert (response.status, response.body) == (404, b"")


async def chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b" " * size


@pytest.mark.parametrize(
    "response",
    [
        lambda: raw_response(200, b" " * 60_000),  # Content-Length over the cap
        lambda: httpx.Response(200, content=chunks(100, 1000)),  # chunked, no length
        lambda: raw_response(200, b"{}", {"Content-Encoding": "gzip"}),
    ],
)
async def test_fetcher_refuses_big_or_compressed_bodies(
    response: Callable[[], httpx.Response],
) -> None:
    with pytest.raises(WellKnownUnavailable, match=r"over|compressed"):
        await fetcher(lambda request: response())("example.org")


async def test_fetcher_turns_connection_failures_into_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(WellKnownUnavailable, match="ConnectError"):
        await fetcher(handler)("example.org")


async def test_fetcher_gives_up_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()

    start = trio.current_time()
    with pytest.raises(WellKnownUnavailable, match="no answer within 3"):
        await fetcher(handler, timeout=3)("example.org")
    assert trio.current_time() - start == pytest.approx(3)


# --- The default SRV lookup, against a DNS server on loopback ---------------------------------


async def serve_dns(
    sock: trio.socket.SocketType, zone: dict[str, list[str]], failing: set[str]
) -> None:
    """Answer SRV queries from `zone` (name -> "priority weight port target" records);
    NXDOMAIN for other names, SERVFAIL for `failing` ones."""
    while True:
        data, address = await sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        if name in failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in zone:
            rrset = response.find_rrset(
                response.answer, question.name, dns.rdataclass.IN, dns.rdatatype.SRV, create=True
            )
            for text in zone[name]:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, text), 300)
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        await sock.sendto(response.to_wire(), address)


async def test_dns_srv_lookup() -> None:
    zone = {
        "_matrix-fed._tcp.example.org.": ["10 5 8448 fed.example.org.", "20 0 8449 backup.org."],
        "_matrix-fed._tcp.none.org.": ["0 0 0 ."],
    }
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        lookup = DnsSrvLookup(nameservers=["127.0.0.1"], port=sock.getsockname()[1], lifetime=5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_dns, sock, zone, {"_matrix-fed._tcp.broken.org."})
            records = await lookup("_matrix-fed._tcp.example.org")
            assert sorted(records, key=lambda r: r.priority) == [
                SrvRecord(10, 5, 8448, "fed.example.org"),
                SrvRecord(20, 0, 8449, "backup.org"),
            ]
            assert await lookup("_matrix-fed._tcp.none.org") == [SrvRecord(0, 0, 0, ".")]
            assert await lookup("_matrix-fed._tcp.nothing.org") == []
            with pytest.raises(DiscoveryError, match=r"broken\.org"):
                await lookup("_matrix-fed._tcp.broken.org")
            nursery.cancel_scope.cancel()
