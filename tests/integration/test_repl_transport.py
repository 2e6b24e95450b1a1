"""The replication transport over real loopback TCP (SEED-SPEC seed 3, tests 3.4 1-6 and 8).

The streams are small list-backed implementations of the `WriterStream`/`FollowerStream`
protocols defined here: the follower reads its catch-up from the writer's list, as a worker
reads the shared database. Some tests talk to the server with raw lines, and some run the client
against a raw line server written here, so that exact lines and their order can be checked.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest

import trio
import trio.lowlevel

from trioserver.errors import MatrixError
from trioserver.repl.client import ReplicationClient, ReplicationUnavailable, TcpLink
from trioserver.repl.server import ReplicationServer
from trioserver.repl.streams import UpdatePage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from trioserver.repl.streams import JsonRow

SECRET = "s3cret"
CLOCK_MS = 1234


class ListWriter:
    """A writer stream over a list of (token, row)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[tuple[int, JsonRow]] = []
        self.token = 0
        self.reads = 0

    def current_token(self) -> int:
        return self.token

    def write(self, *rows: JsonRow) -> int:
        """Rows sharing one new token."""
        self.token += 1
        self.rows.extend((self.token, row) for row in rows)
        return self.token

    def page(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        found = [(t, r) for t, r in self.rows if from_token < t <= upto_token]
        if len(found) <= limit:
            return UpdatePage(found, upto_token, False)
        cut = limit
        while cut < len(found) and found[cut][0] == found[cut - 1][0]:
            cut += 1  # never split the rows of one token
        return UpdatePage(found[:cut], found[cut - 1][0], True)

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        return self.page(from_token, upto_token, limit)


class ListFollower:
    """A follower that catches up from a writer's list and records what it applied."""

    def __init__(self, writer: ListWriter, *, token: int = 0, delay_s: float = 0.0) -> None:
        self.name = writer.name
        self.writer = writer
        self.token = token
        self.delay_s = delay_s
        self.applied: list[tuple[int, list[JsonRow]]] = []
        self.fetches: list[UpdatePage] = []
        self.resets: list[int] = []

    def current_token(self) -> int:
        return self.token

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        await trio.sleep(self.delay_s)
        page = self.writer.page(from_token, upto_token, limit)
        self.fetches.append(page)
        return page

    async def apply(self, token: int, rows: Sequence[JsonRow]) -> None:
        await trio.lowlevel.checkpoint()
        assert token >= self.token
        self.applied.append((token, list(rows)))
        self.token = token

    def reset(self, token: int) -> None:
        self.resets.append(token)
        self.token = token

    def rows(self) -> list[JsonRow]:
        return [row for _, rows in self.applied for row in rows]


def make_server(writers: Sequence[ListWriter], **kwargs: Any) -> ReplicationServer:
    return ReplicationServer(
        writers,
        server_name="blue",
        instance_name="main",
        secret=SECRET,
        clock_ms=lambda: CLOCK_MS,
        **kwargs,
    )


def make_client(followers: Sequence[ListFollower], port: int, **kwargs: Any) -> ReplicationClient:
    link_keys = ("ping_interval_s", "ping_timeout_s")
    link = TcpLink(
        host="127.0.0.1",
        port=port,
        secret=kwargs.pop("secret", SECRET),
        instance_name="w1",
        server_name=kwargs.pop("server_name", "blue"),
        clock_ms=lambda: CLOCK_MS,
        **{key: kwargs.pop(key) for key in link_keys if key in kwargs},
    )
    kwargs.setdefault("start_timeout_s", 5.0)
    return ReplicationClient(followers, link, **kwargs)


_OPEN: list[Lines] = []


class Lines:
    """A raw line connection, for exact wire checks."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        _OPEN.append(self)

    async def send(self, *lines: str) -> None:
        await self.stream.send_all(b"".join(line.encode() + b"\n" for line in lines))

    async def line(self, timeout_s: float = 5.0) -> str | None:
        """The next line, or None at EOF."""
        with trio.fail_after(timeout_s):
            while b"\n" not in self.buffer:
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    return None
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def lines(self, n: int) -> list[str | None]:
        return [await self.line() for _ in range(n)]

    async def nothing_within(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self.line(timeout_s=math.inf)
            return False
        return True


async def connect(port: int) -> Lines:
    return Lines(await trio.open_tcp_stream("127.0.0.1", port))


async def handshake(port: int) -> Lines:
    peer = await connect(port)
    assert await peer.lines(2) == ["SERVER blue", f"PING {CLOCK_MS}"]
    await peer.send("NAME w1", f"AUTH {SECRET}", "PING 1", "REPLICATE")
    return peer


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 -- the fakes have no event to wait on
            await trio.sleep(0.005)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()
    while _OPEN:
        await _OPEN.pop().stream.aclose()


# 3.4.1 and 3.4.2 on the wire ---------------------------------------------------------------


async def test_handshake_lines_exactly_then_one_live_row(nursery: trio.Nursery) -> None:
    receipts, caches = ListWriter("receipts"), ListWriter("caches")
    receipts.write({"room_id": "!old:blue"})
    receipts.write({"room_id": "!old2:blue"})
    server = make_server([receipts, caches])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await handshake(port)
    assert await peer.lines(2) == ["POSITION receipts main 2 2", "POSITION caches main 0 0"]
    assert await peer.nothing_within(0.1)  # no RDATA for rows written before the connection
    row = {"room_id": "!room:blue", "type": "m.read", "user_id": "@feeling:blue", "data": {"a": 1}}
    receipts.write(row)
    server.poke()
    line = await peer.line()
    assert line == f"RDATA receipts main 3 {orjson.dumps(row).decode()}"
    assert await peer.nothing_within(0.1)


async def test_rows_sharing_a_token_go_out_as_batch_lines(nursery: trio.Nursery) -> None:
    caches = ListWriter("caches")
    server = make_server([caches])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await handshake(port)
    assert await peer.line() == "POSITION caches main 0 0"
    caches.token = 53
    caches.write({"k": 1}, {"k": 2}, {"k": 3})
    server.poke()
    assert await peer.lines(3) == [
        'RDATA caches main batch {"k":1}',
        'RDATA caches main batch {"k":2}',
        'RDATA caches main 54 {"k":3}',
    ]


# 3.4.8 and authentication ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        ("RDATA caches main 1 {}", "ERROR invalid command: RDATA"),
        ("POSITION caches main 1 1", "ERROR invalid command: POSITION"),
        ("FOO bar", "ERROR unknown command 'FOO'"),
        ("PING soon", "ERROR bad PING line"),
    ],
)
async def test_bad_lines_get_an_error_and_close_only_that_connection(
    nursery: trio.Nursery, sent: str, error: str
) -> None:
    caches = ListWriter("caches")
    server = make_server([caches])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    good = await handshake(port)
    assert await good.line() == "POSITION caches main 0 0"
    bad = await handshake(port)
    assert await bad.line() == "POSITION caches main 0 0"
    await bad.send("", "   ", sent)  # blank lines are ignored, the bad one is not
    line = await bad.line()
    assert line is not None
    assert line.startswith(error)
    assert await bad.line() is None
    caches.write({"k": 1})
    server.poke()
    assert await good.line() == 'RDATA caches main 1 {"k":1}'


async def test_wrong_secret_is_refused(nursery: trio.Nursery) -> None:
    server = make_server([ListWriter("caches")])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await connect(port)
    await peer.lines(2)
    await peer.send("NAME w1", "AUTH wrong", "REPLICATE")
    assert await peer.line() == "ERROR wrong secret"
    assert await peer.line() is None


async def test_nothing_but_name_ping_auth_before_auth(nursery: trio.Nursery) -> None:
    server = make_server([ListWriter("caches")])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await connect(port)
    await peer.lines(2)
    await peer.send("NAME w1", "PING 5", "REPLICATE")
    assert await peer.line() == "ERROR REPLICATE before AUTH"
    assert await peer.line() is None


async def test_a_silent_peer_is_closed_only_after_its_first_ping(nursery: trio.Nursery) -> None:
    server = make_server([ListWriter("caches")], ping_interval_s=0.05, ping_timeout_s=0.3)
    port = await nursery.start(server.run, "127.0.0.1", 0)
    netcat = await connect(port)  # never pings: never timed out
    await netcat.send(f"AUTH {SECRET}")
    pinger = await connect(port)
    await pinger.send("PING 1")
    with trio.fail_after(2):
        while (line := await pinger.line()) is not None and line.startswith(("SERVER", "PING")):
            pass
    assert line == "ERROR ping time out"
    assert await pinger.line() is None
    # The one that never pinged is still served (it keeps getting PINGs).
    assert (await netcat.line()) == "SERVER blue"
    netcat.buffer = b""
    assert (await netcat.line(timeout_s=1)) == f"PING {CLOCK_MS}"


async def test_a_peer_that_never_authenticates_is_closed(nursery: trio.Nursery) -> None:
    server = make_server([ListWriter("caches")], auth_timeout_s=0.2)
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await connect(port)
    assert await peer.lines(2) == ["SERVER blue", f"PING {CLOCK_MS}"]
    await peer.send("NAME w1")
    assert await peer.line() == "ERROR no AUTH in time"
    assert await peer.line() is None
    authed = await handshake(port)
    await trio.sleep(0.3)
    assert await authed.line() == "POSITION caches main 0 0"
    assert server.statistics().connections == 1


async def test_a_slow_consumer_is_cut_off_and_a_new_connection_catches_up(
    nursery: trio.Nursery,
) -> None:
    events = ListWriter("events")
    server = make_server([events], max_buffered=64 * 1024)
    port = await nursery.start(server.run, "127.0.0.1", 0)
    fast = ListFollower(events)
    client = make_client([fast], port)
    await nursery.start(client.run)
    slow = await handshake(port)  # reads nothing from now on
    big = "x" * 10_000
    # Enough to fill the kernel's socket buffers and then the server's own buffer.
    for i in range(3000):
        events.write({"i": i, "pad": big})
        if i % 50 == 0:
            server.poke()
            await trio.lowlevel.checkpoint()
        if server.statistics().replicating == 1:
            break  # the slow one is closing
    server.poke()
    await until(lambda: fast.token == events.token, timeout_s=10)
    assert [row["i"] for row in fast.rows()] == list(range(len(events.rows)))
    last = None
    with trio.fail_after(10):
        while (line := await slow.line()) is not None:
            last = line
    assert last == "ERROR Failed to keep up"
    # A fresh client catches up from the "database" to the published position.
    again = ListFollower(events)
    await nursery.start(make_client([again], port).run)
    assert again.rows() == fast.rows()


# The client: 3.4.2-3.4.6 -------------------------------------------------------------------


async def test_live_row_applied_once_and_catch_up_after_reconnect(nursery: trio.Nursery) -> None:
    receipts = ListWriter("receipts")
    receipts.write({"n": 1})
    server = make_server([receipts])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    follower = ListFollower(receipts)
    client = make_client([follower], port)
    scope = trio.CancelScope()
    nursery.start_soon(_run_in, scope, client)
    await until(lambda: client.connected)
    assert follower.applied == [(1, [{"n": 1}])]  # caught up from POSITION
    receipts.write({"n": 2})
    server.poke()
    await until(lambda: follower.token == 2)
    assert follower.applied == [(1, [{"n": 1}]), (2, [{"n": 2}])]
    scope.cancel()
    await until(lambda: server.statistics().connections == 0)
    reads = receipts.reads
    receipts.write({"n": 3})
    server.poke()
    await until(lambda: server.published_token("receipts") == 3)
    assert receipts.reads == reads  # nobody connected: nothing read
    assert follower.applied[-1][0] == 2
    fetches = len(follower.fetches)
    await nursery.start(client.run)
    assert client.connected
    assert follower.applied[2:] == [(3, [{"n": 3}])]
    assert len(follower.fetches) == fetches + 1


async def _run_in(scope: trio.CancelScope, client: ReplicationClient) -> None:
    with scope:
        await client.run()


async def test_catch_up_in_pages_of_100(nursery: trio.Nursery) -> None:
    events = ListWriter("events")
    for i in range(250):
        events.write({"i": i})
    server = make_server([events])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    follower = ListFollower(events)
    await nursery.start(make_client([follower], port).run)
    assert [page.limited for page in follower.fetches] == [True, True, False]
    assert [row["i"] for row in follower.rows()] == list(range(250))
    assert follower.token == 250 == server.published_token("events")


async def test_rdata_during_catch_up_is_neither_lost_nor_applied_twice(
    nursery: trio.Nursery,
) -> None:
    events = ListWriter("events")
    for i in range(250):
        events.write({"i": i})
    server = make_server([events])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    follower = ListFollower(events, delay_s=0.02)
    client = make_client([follower], port)

    async def keep_writing() -> None:
        for i in range(250, 400):
            events.write({"i": i}, {"i": f"{i}b"})
            server.poke()
            await trio.sleep(0.001)

    nursery.start_soon(keep_writing)
    await nursery.start(client.run)
    await until(lambda: follower.token == events.token == 400)
    rows = [row["i"] for row in follower.rows()]
    written = [row["i"] for _, row in events.rows]
    assert sorted(map(str, rows)) == sorted(map(str, written))
    assert len(rows) == len(set(rows)) == len(written)


# The client against a raw line server -------------------------------------------------------


class LineServer:
    """A raw replication server: each connection is handed to the test as `Lines`."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Lines](math.inf)

    async def handle(self, stream: trio.SocketStream) -> None:
        peer = Lines(stream)
        await self.send.send(peer)
        await trio.sleep_forever()

    async def accept(self, *, server_name: str = "blue") -> Lines:
        with trio.fail_after(5):
            peer = await self.receive.receive()
        await peer.send(f"SERVER {server_name}", "PING 1")
        return peer


async def line_server(nursery: trio.Nursery) -> tuple[LineServer, int]:
    server = LineServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    return server, listeners[0].socket.getsockname()[1]


async def test_client_handshake_batch_and_reset(nursery: trio.Nursery) -> None:
    server, port = await line_server(nursery)
    caches, typing = ListWriter("caches"), ListWriter("typing")
    caches.token = 53
    cache_follower = ListFollower(caches, token=53)
    typing_follower = ListFollower(typing, token=5)
    client = make_client([cache_follower, typing_follower], port)
    changes: list[bool] = []
    client.add_connection_listener(changes.append)
    nursery.start_soon(client.run)
    peer = await server.accept()
    assert await peer.lines(4) == ["NAME w1", f"AUTH {SECRET}", f"PING {CLOCK_MS}", "REPLICATE"]
    # Typing went back to 2: main restarted and its in-memory stream with it.
    await peer.send("POSITION nope main 1 1", "POSITION caches main 53 53")
    await peer.send("POSITION typing main 2 2")
    await until(lambda: client.connected)
    assert typing_follower.resets == [2]
    assert changes == [True]
    await peer.send('RDATA caches main batch {"k":1}', 'RDATA caches main batch {"k":2}')
    await trio.sleep(0.05)
    assert cache_follower.applied == []
    assert cache_follower.token == 53
    await peer.send('RDATA caches main 54 {"k":3}', 'RDATA caches main 54 {"k":4}')
    await until(lambda: cache_follower.token == 54)
    await trio.sleep(0.02)
    # The second 54 line is at our token already: dropped.
    assert cache_follower.applied == [(54, [{"k": 1}, {"k": 2}, {"k": 3}])]
    await peer.stream.aclose()
    await until(lambda: not client.connected)
    assert changes == [True, False]
    await server.accept()  # it reconnects


async def following_events_from(nursery: trio.Nursery, token: int) -> tuple[Lines, ListFollower]:
    """A client following the events stream of a raw line server, connected at `token`."""
    server, port = await line_server(nursery)
    follower = ListFollower(ListWriter("events"), token=token)
    client = make_client([follower], port)
    nursery.start_soon(client.run)
    peer = await server.accept()
    await peer.lines(4)
    await peer.send(f"POSITION events main {token} {token}")
    await until(lambda: client.connected)
    return peer, follower


async def test_rows_arriving_together_are_applied_as_one_batch(nursery: trio.Nursery) -> None:
    # Each event has its own token; applying (and waking /sync) per token made a worker
    # answer a burst of events with one response per event.
    peer, follower = await following_events_from(nursery, 10)
    await peer.send(
        'RDATA events main 10 {"i":0}',  # at our token already: dropped
        'RDATA events main 11 {"i":1}',
        'RDATA events main 12 {"i":2}',
        'RDATA events main batch {"i":3}',
        'RDATA events main 13 {"i":4}',
        'RDATA events main batch {"i":5}',  # its token has not arrived: kept back
    )
    await until(lambda: follower.token == 13)
    await trio.sleep(0.02)
    assert follower.applied == [(13, [{"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}])]
    await peer.send('RDATA events main 14 {"i":6}')
    await until(lambda: follower.token == 14)
    assert follower.applied[1:] == [(14, [{"i": 5}, {"i": 6}])]


async def test_a_long_burst_is_applied_in_pages(nursery: trio.Nursery) -> None:
    peer, follower = await following_events_from(nursery, 0)
    await peer.send(*(f'RDATA events main {i} {{"i":{i}}}' for i in range(1, 251)))
    await until(lambda: follower.token == 250)
    assert [row["i"] for row in follower.rows()] == list(range(1, 251))
    assert all(len(rows) <= 100 for _, rows in follower.applied)
    assert len(follower.applied) < 250


async def test_client_refuses_a_server_with_another_name(nursery: trio.Nursery) -> None:
    server, port = await line_server(nursery)
    client = make_client([ListFollower(ListWriter("caches"))], port, backoff_min_s=0.01)
    nursery.start_soon(client.run)
    peer = await server.accept(server_name="green")
    assert await peer.line() == "ERROR expected SERVER blue"  # and no AUTH with our secret
    assert await peer.line() is None
    await server.accept()  # and tries again later


async def test_client_drops_a_silent_server(nursery: trio.Nursery) -> None:
    server, port = await line_server(nursery)
    client = make_client(
        [ListFollower(ListWriter("caches"))], port, ping_interval_s=0.05, ping_timeout_s=0.3
    )
    nursery.start_soon(client.run)
    peer = await server.accept()
    await peer.lines(4)
    await peer.send("POSITION caches main 0 0")
    await until(lambda: client.connected)
    assert await peer.line() == f"PING {CLOCK_MS}"  # it pings us every interval
    with trio.fail_after(2):
        while (await peer.line()) is not None:
            pass
    await until(lambda: not client.connected)
    await server.accept()  # and it reconnects


async def test_wait_for_positions(nursery: trio.Nursery) -> None:
    events = ListWriter("events")
    server = make_server([events])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    follower = ListFollower(events)
    client = make_client([follower], port)
    await nursery.start(client.run)
    token = events.write({"i": 1})
    server.poke()
    assert await client.wait_for_positions({"events": token, "unknown": 99}, 5.0)
    assert follower.token == token
    assert not await client.wait_for_positions({"events": token + 1}, 0.05)


async def test_wait_for_positions_raises_without_a_connection(nursery: trio.Nursery) -> None:
    server, port = await line_server(nursery)
    client = make_client([ListFollower(ListWriter("caches"))], port, start_timeout_s=0.01)
    await nursery.start(client.run)
    with pytest.raises(ReplicationUnavailable) as info:
        await client.wait_for_positions({"caches": 1}, 1.0)
    assert isinstance(info.value, MatrixError)
    assert (info.value.errcode, info.value.status) == ("M_UNKNOWN", 503)
    peer = await server.accept()
    await peer.lines(4)
    await peer.send("POSITION caches main 0 0")
    await until(lambda: client.connected)

    async def drop_soon() -> None:
        await trio.sleep(0.05)
        await peer.stream.aclose()

    nursery.start_soon(drop_soon)
    with pytest.raises(ReplicationUnavailable), trio.fail_after(2):
        await client.wait_for_positions({"caches": 1}, 5.0)


async def test_a_row_too_long_for_a_line_makes_peers_catch_up(nursery: trio.Nursery) -> None:
    events = ListWriter("events")
    server = make_server([events])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await handshake(port)
    assert await peer.line() == "POSITION events main 0 0"
    events.write({"pad": "x" * (1024 * 1024)})
    server.poke()
    assert await peer.line() == "ERROR a row is too long for a line; catch up"
    assert await peer.line() is None
    follower = ListFollower(events)
    await nursery.start(make_client([follower], port).run)
    assert follower.token == 1
    assert len(follower.rows()) == 1


async def test_a_position_without_a_row_is_announced(nursery: trio.Nursery) -> None:
    events = ListWriter("events")
    server = make_server([events])
    port = await nursery.start(server.run, "127.0.0.1", 0)
    peer = await handshake(port)
    assert await peer.line() == "POSITION events main 0 0"
    follower = ListFollower(events)
    client = make_client([follower], port)
    await nursery.start(client.run)
    events.write({"i": 1})
    events.token += 2  # positions 2 and 3 carry no row (e.g. rows another writer dropped)
    server.poke()
    assert await peer.lines(2) == ['RDATA events main 1 {"i":1}', "POSITION events main 1 3"]
    assert await client.wait_for_positions({"events": 3}, 5.0)
    assert follower.applied == [(1, [{"i": 1}]), (3, [])]
