"""The replication transport over a real Redis's pub/sub (issue 14).

The streams are the list-backed writer and follower of `test_repl_transport`: the follower
catches up from the writer's list as a worker reads the shared database. Some tests read and
write the channels raw, to check the exact lines; the others run `RedisLink` clients against
the `RedisReplicationServer`. Every test has channels of its own (`unique_prefix`), and cuts
connections by their client names (``CLIENT KILL``) or through a proxy, never the whole Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

import trio

from trioserver.errors import StartupError
from trioserver.repl.client import ReplicationClient, ReplicationUnavailable
from trioserver.repl.redis_channels import WriterChannels, writer_channels
from trioserver.repl.redis_client import RedisConnection, RedisSubscriber, open_redis
from trioserver.repl.redis_link import RedisLink
from trioserver.repl.redis_server import RedisReplicationServer
from trioserver.repl.resp import RedisAddress

from tests.integration.redis_helpers import REDIS, kill_clients, requires_redis, unique_prefix
from tests.integration.tcp_proxy import CuttableProxy
from tests.integration.test_repl_transport import CLOCK_MS, ListFollower, ListWriter, until

pytestmark = requires_redis

FAST: dict[str, Any] = {"ping_interval_s": 0.05, "ping_timeout_s": 0.5}


@attrs.define
class Setup:
    """One test's channels, with helpers to make writers, followers and raw ends."""

    prefix: str
    channels: WriterChannels
    nursery: trio.Nursery
    connections: list[RedisConnection] = attrs.field(factory=list)

    def server(self, writers: list[ListWriter], **kwargs: Any) -> RedisReplicationServer:
        return RedisReplicationServer(
            writers,
            address=kwargs.pop("address", REDIS),
            channels=self.channels,
            server_name="blue",
            instance_name="main",
            channel_prefix=self.prefix,
            clock_ms=lambda: CLOCK_MS,
            backoff_min_s=0.01,
            **kwargs,
        )

    def client(
        self, followers: list[ListFollower], *, name: str = "w1", **kwargs: Any
    ) -> ReplicationClient:
        link = RedisLink(
            address=kwargs.pop("address", REDIS),
            channels=self.channels,
            instance_name=name,
            server_name="blue",
            channel_prefix=self.prefix,
            clock_ms=lambda: CLOCK_MS,
            **{key: kwargs.pop(key) for key in FAST if key in kwargs},
        )
        kwargs.setdefault("start_timeout_s", 5.0)
        return ReplicationClient(followers, link, backoff_min_s=0.01, **kwargs)

    async def raw(self) -> RedisConnection:
        connection = await open_redis(REDIS, client_name=f"{self.prefix}.raw")
        self.connections.append(connection)
        return connection

    async def listen(self) -> RawChannel:
        """A raw subscriber of the stream channel."""
        subscriber = RedisSubscriber(await self.raw())
        await subscriber.subscribe(self.channels.stream)
        return RawChannel(subscriber)

    async def publish_command(self, payload: bytes) -> None:
        """Publish `payload` raw on the command channel."""
        connection = await self.raw()
        await connection.command("PUBLISH", self.channels.commands, payload)


@attrs.define
class RawChannel:
    """The lines published on a channel, across messages."""

    subscriber: RedisSubscriber
    pending: list[str] = attrs.field(factory=list)

    async def lines(self, n: int, *, skip_pings: bool = True) -> list[str]:
        with trio.fail_after(5):
            while len(self.pending) < n:
                message = await self.subscriber.next_message()
                assert message is not None
                assert message[1].endswith(b"\n")  # whole lines only
                self.pending += [
                    line
                    for line in message[1].decode().splitlines()
                    if not (skip_pings and line.startswith("PING "))
                ]
        taken, self.pending = self.pending[:n], self.pending[n:]
        return taken


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    prefix = unique_prefix()
    async with trio.open_nursery() as nursery:
        ours = Setup(prefix, writer_channels(prefix, "blue", "main"), nursery)
        yield ours
        nursery.cancel_scope.cancel()
    for connection in ours.connections:
        await connection.aclose()


async def start_cancellable(nursery: trio.Nursery, run: Any) -> trio.CancelScope:
    """Start `run` (``run(*, task_status)``) in `nursery`; the scope that stops it alone."""
    scope = trio.CancelScope()

    async def cancellable(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await run(task_status=task_status)

    await nursery.start(cancellable)
    return scope


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in leaves(exc)]
    return [group]


async def test_channels_carry_server_positions_and_rows_as_lines(setup: Setup) -> None:
    assert setup.channels == WriterChannels(
        f"{setup.prefix}/blue/main", f"{setup.prefix}/blue/main/commands"
    )
    channel = await setup.listen()
    events = ListWriter("events")
    events.write({"i": 1}, {"i": "1b"})
    server = setup.server([events])
    await setup.nursery.start(server.run)
    # A session starts with SERVER and every stream's position: never a backlog.
    assert await channel.lines(2) == ["SERVER blue", "POSITION events main 1 1"]
    events.write({"i": 2}, {"i": "2b"})
    server.poke()
    assert await channel.lines(2) == [
        'RDATA events main batch {"i":2}',
        'RDATA events main 2 {"i":"2b"}',
    ]
    # A follower asks on the command channel; the answer goes to the stream channel.
    await setup.publish_command(b"NAME w9\nREPLICATE\n")
    assert await channel.lines(1) == ["POSITION events main 2 2"]
    assert server.followers() == {"w9"}
    # A bad message is dropped (anyone on the Redis could send it), the session goes on.
    await setup.publish_command(b"RDATA events main 3 {}\n")
    await setup.publish_command(b"NAME w8\nREPLICATE")  # no final line break
    await setup.publish_command(b"NAME w7\nREPLICATE \n")
    assert await channel.lines(1) == ["POSITION events main 2 2"]
    assert server.followers() == {"w9", "w7"}
    assert server.sessions == 1


async def test_the_writer_pings_its_channel(setup: Setup) -> None:
    channel = await setup.listen()
    await setup.nursery.start(setup.server([ListWriter("caches")], **FAST).run)
    assert await channel.lines(3, skip_pings=False) == [
        "SERVER blue",
        "POSITION caches main 0 0",
        f"PING {CLOCK_MS}",
    ]


async def test_a_follower_catches_up_in_pages_then_applies_live_rows_once(setup: Setup) -> None:
    events = ListWriter("events")
    for i in range(250):
        events.write({"i": i})
    server = setup.server([events])
    await setup.nursery.start(server.run)
    follower = ListFollower(events)
    client = setup.client([follower])
    await setup.nursery.start(client.run)
    assert client.connected
    assert [page.limited for page in follower.fetches] == [True, True, False]
    for i in range(250, 300):
        events.write({"i": i}, {"i": f"{i}b"})
        server.poke()
    await until(lambda: follower.token == 300)
    assert await client.wait_for_positions({"events": 300}, 1.0)
    rows = [row["i"] for row in follower.rows()]
    assert rows == [row["i"] for _, row in events.rows]


async def test_rdata_during_catch_up_is_neither_lost_nor_applied_twice(setup: Setup) -> None:
    events = ListWriter("events")
    for i in range(250):
        events.write({"i": i})
    server = setup.server([events])
    await setup.nursery.start(server.run)
    follower = ListFollower(events, delay_s=0.02)

    async def keep_writing() -> None:
        for i in range(250, 400):
            events.write({"i": i}, {"i": f"{i}b"})
            server.poke()
            await trio.sleep(0.001)

    setup.nursery.start_soon(keep_writing)
    await setup.nursery.start(setup.client([follower]).run)
    await until(lambda: follower.token == events.token == 400)
    assert [row["i"] for row in follower.rows()] == [row["i"] for _, row in events.rows]


async def test_a_cut_subscription_reconnects_and_catches_up_every_row_once(setup: Setup) -> None:
    receipts = ListWriter("receipts")
    server = setup.server([receipts])
    await setup.nursery.start(server.run)
    follower = ListFollower(receipts)
    client = setup.client([follower])
    changes: list[bool] = []
    client.add_connection_listener(changes.append)
    await setup.nursery.start(client.run)
    receipts.write({"n": 0})
    server.poke()
    await until(lambda: follower.token == 1)
    # Like `CLIENT KILL TYPE pubsub`, but only this test's follower (its two connections).
    assert await kill_clients(f"{setup.prefix}.w1.follows-main.") == 2
    for n in range(1, 120):
        receipts.write({"n": n})
        server.poke()
    await until(lambda: follower.token == receipts.token == 120 and client.connected)
    assert [row["n"] for row in follower.rows()] == list(range(120))
    assert changes == [True, False, True]


async def test_a_new_writer_session_makes_followers_start_over(setup: Setup) -> None:
    events = ListWriter("events")
    server = setup.server([events])
    await setup.nursery.start(server.run)
    follower = ListFollower(events)
    client = setup.client([follower])
    changes: list[bool] = []
    client.add_connection_listener(changes.append)
    await setup.nursery.start(client.run)
    # The writer loses Redis: rows it writes meanwhile are published to nobody.
    assert await kill_clients(f"{setup.prefix}.main.writer.") == 2
    for i in range(30):
        events.write({"i": i})
        server.poke()
    await until(lambda: server.sessions == 2)
    # Its new session's SERVER tells the follower to start over: it catches up from the list.
    await until(lambda: follower.token == 30 and client.connected)
    assert [row["i"] for row in follower.rows()] == list(range(30))
    assert changes == [True, False, True]


async def test_a_silent_writer_disconnects_its_followers(setup: Setup) -> None:
    caches = ListWriter("caches")
    writer_scope = await start_cancellable(setup.nursery, setup.server([caches], **FAST).run)
    client = setup.client([ListFollower(caches)], **FAST)
    await setup.nursery.start(client.run)
    assert client.connected
    writer_scope.cancel()  # the writer process is gone: no more PINGs
    with trio.fail_after(3):
        await until(lambda: not client.connected)
    with pytest.raises(ReplicationUnavailable):
        await client.wait_for_positions({"caches": 0}, 1.0)


async def test_followers_gone_are_reported(setup: Setup) -> None:
    server = setup.server([ListWriter("caches")], **FAST)
    gone: list[str] = []
    server.add_disconnect_listener(gone.append)
    await setup.nursery.start(server.run)
    client = setup.client([ListFollower(ListWriter("caches"))], **FAST)
    follower_scope = await start_cancellable(setup.nursery, client.run)
    await until(lambda: server.followers() == {"w1"})
    assert gone == []
    # A new subscription of w1 (its REPLICATE) ends its earlier one.
    await kill_clients(f"{setup.prefix}.w1.follows-main.")
    await until(lambda: gone == ["w1"] and client.connected)
    # w1 stops: not heard for the ping timeout, it is gone again.
    follower_scope.cancel()
    with trio.fail_after(3):
        await until(lambda: gone == ["w1", "w1"])
    assert server.followers() == set()


async def test_without_redis_a_follower_is_not_connected(setup: Setup) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    nowhere = RedisAddress("127.0.0.1", port)
    client = setup.client([ListFollower(ListWriter("caches"))], address=nowhere)
    client_with_timeout = setup.client(
        [ListFollower(ListWriter("caches"))], address=nowhere, start_timeout_s=0.05
    )
    await setup.nursery.start(client_with_timeout.run)
    assert not client.connected
    assert not client_with_timeout.connected
    with pytest.raises(ReplicationUnavailable):
        await client_with_timeout.wait_for_positions({"caches": 0}, 1.0)


async def test_a_writer_started_before_redis_publishes_once_redis_is_there(
    setup: Setup,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as proxy_nursery:
        proxy = CuttableProxy(listeners[0])
        proxy.route_to(REDIS.port)
        proxy_nursery.start_soon(proxy.serve, proxy_nursery)
        proxy.cut()
        events = ListWriter("events")
        events.write({"i": 0})
        server = setup.server([events], address=attrs.evolve(REDIS, port=proxy.port))
        # Redis is not there: the writer starts anyway (and keeps trying).
        await setup.nursery.start(server.run)
        follower = ListFollower(events)
        client = setup.client([follower], start_timeout_s=0.05)
        await setup.nursery.start(client.run)
        assert not client.connected
        proxy.heal()
        # The writer's first session announces its positions to the waiting follower.
        await until(lambda: follower.token == 1 and client.connected)
        assert server.sessions == 1
        proxy_nursery.cancel_scope.cancel()


async def test_a_wrong_password_stops_the_writer_at_start(setup: Setup) -> None:
    server = setup.server([ListWriter("caches")], address=attrs.evolve(REDIS, password="no"))
    with pytest.raises(BaseException) as info:  # noqa: PT011 - checked below
        await setup.nursery.start(server.run)
    [error] = leaves(info.value)
    assert isinstance(error, StartupError)
    assert str(error).startswith("config.replication.redis: redis://")
    assert "AUTH refused" in str(error)
