"""The trio Redis client against a real Redis on loopback (issue 14), and against raw TCP
servers written here for the replies a real Redis never sends."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import pytest

import trio

from trioserver.repl.redis_client import RedisSubscriber, open_redis
from trioserver.repl.resp import (
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    parse_redis_url,
)

from tests.integration.redis_helpers import (
    REDIS,
    admin,
    kill_clients,
    requires_redis,
    unique_prefix,
)


@requires_redis
async def test_publish_reaches_subscribers_in_order() -> None:
    prefix = unique_prefix()
    first, second = f"{prefix}/a", f"{prefix}/b"
    async with (
        await open_redis(REDIS, client_name=f"{prefix}.pub") as publisher,
        await open_redis(REDIS, client_name=f"{prefix}.sub") as connection,
    ):
        subscriber = RedisSubscriber(connection)
        await subscriber.subscribe(first, second)
        # PUBLISH answers how many subscribers got it; nobody listens on the third channel.
        assert await publisher.command("PUBLISH", first, b"one\n") == 1
        assert await publisher.command("PUBLISH", f"{prefix}/c", b"lost") == 0
        payload = bytes(range(256)) + "é\r\n".encode()
        assert await publisher.command("PUBLISH", second, payload) == 1
        assert await publisher.command("PUBLISH", first, b"three") == 1
        got = [await subscriber.next_message(5) for _ in range(3)]
        assert got == [
            (first.encode(), b"one\n"),
            (second.encode(), payload),
            (first.encode(), b"three"),
        ]
        assert await subscriber.next_message(0.05) is None


@requires_redis
async def test_keep_alive_pings_are_answered_and_skipped() -> None:
    prefix = unique_prefix()
    async with await open_redis(REDIS, client_name=f"{prefix}.sub") as connection:
        subscriber = RedisSubscriber(connection)
        await subscriber.subscribe(f"{prefix}/a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber.keep_alive, 0.02, 1.0)
            # Pongs keep arriving (and keep the connection alive) but are not messages.
            assert await subscriber.next_message(0.3) is None
            assert trio.current_time() - connection.last_received < 0.1
            nursery.cancel_scope.cancel()


@requires_redis
async def test_select_and_client_name_come_from_the_url() -> None:
    prefix = unique_prefix()
    address = attrs.evolve(REDIS, db=5)
    async with await open_redis(address, client_name=f"{prefix}.x") as redis:
        info = (await redis.command("CLIENT", "INFO")).decode()
        assert " db=5 " in f" {info} "
        assert f"name={prefix}.x " in info


@requires_redis
async def test_a_password_redis_does_not_expect_is_a_clear_error() -> None:
    address = attrs.evolve(REDIS, password="not-the-password")
    with pytest.raises(RedisReplyError) as info:
        await open_redis(address)
    assert "AUTH refused" in str(info.value)
    assert "not-the-password" not in str(info.value)


@requires_redis
async def test_auth_as_an_acl_user() -> None:
    user, password = unique_prefix(), secrets.token_hex(8)
    async with await admin() as redis:
        await redis.command("ACL", "SETUSER", user, "on", f">{password}", "&*", "+@all")
        try:
            url = f"redis://{user}:{password}@{REDIS.host}:{REDIS.port}/0"
            async with await open_redis(parse_redis_url(url)) as logged_in:
                assert await logged_in.command("ACL", "WHOAMI") == user.encode()
            with pytest.raises(RedisReplyError, match="AUTH refused: WRONGPASS"):
                await open_redis(attrs.evolve(parse_redis_url(url), password="wrong"))
        finally:
            await redis.command("ACL", "DELUSER", user)


@requires_redis
async def test_a_killed_subscriber_fails_clearly_and_a_new_connection_works() -> None:
    prefix = unique_prefix()
    channel = f"{prefix}/a"
    async with await open_redis(REDIS, client_name=f"{prefix}.pub") as publisher:
        async with await open_redis(REDIS, client_name=f"{prefix}.sub") as connection:
            subscriber = RedisSubscriber(connection)
            await subscriber.subscribe(channel)
            assert await kill_clients(f"{prefix}.sub") == 1
            with pytest.raises(RedisConnectionError, match="Redis closed the connection"):
                await subscriber.next_message(5)
        # Reconnecting is the caller's: a new subscription hears what is published from then on.
        async with await open_redis(REDIS, client_name=f"{prefix}.sub") as connection:
            subscriber = RedisSubscriber(connection)
            await subscriber.subscribe(channel)
            assert await publisher.command("PUBLISH", channel, b"again") == 1
            assert await subscriber.next_message(5) == (channel.encode(), b"again")


@requires_redis
async def test_an_error_reply_to_a_command_is_raised() -> None:
    async with await open_redis(REDIS) as redis:
        with pytest.raises(RedisReplyError, match="unknown command"):
            await redis.command("NOSUCHCOMMAND")
        assert await redis.command("PING") == b"PONG"  # the connection is still usable


async def test_nothing_listening_is_a_connection_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(RedisConnectionError, match=r"cannot connect to redis://127\.0\.0\.1"):
        await open_redis(parse_redis_url(f"redis://127.0.0.1:{port}"))


# Raw servers -------------------------------------------------------------------------------


async def raw_server(
    nursery: trio.Nursery, handle: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_a_reply_of_the_wrong_shape_or_not_resp_is_a_protocol_error() -> None:
    async def answers(reply: bytes, stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(reply)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await raw_server(nursery, partial(answers, b":1\r\n"))
        with pytest.raises(RedisProtocolError, match=r"SELECT 3 answered 1, not OK"):
            await open_redis(parse_redis_url(f"redis://127.0.0.1:{port}/3"))
        port = await raw_server(nursery, partial(answers, b"HTTP/1.1 400 Bad Request\r\n"))
        with pytest.raises(RedisProtocolError, match="Protocol error"):
            await open_redis(parse_redis_url(f"redis://:pw@127.0.0.1:{port}"))
        nursery.cancel_scope.cancel()


async def test_a_silent_redis_is_noticed_by_keep_alive_and_by_command_timeouts() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(1024):
            pass

    async with trio.open_nursery() as nursery:
        port = await raw_server(nursery, silent)
        address = parse_redis_url(f"redis://127.0.0.1:{port}")
        with pytest.raises(RedisConnectionError, match=r"no reply within 0.1 s"):
            await open_redis(attrs.evolve(address, db=1), timeout_s=0.1)
        connection = await open_redis(address, timeout_s=0.1)
        subscriber = RedisSubscriber(connection)
        with trio.fail_after(2), pytest.raises(RedisConnectionError, match="no answer for"):
            await subscriber.keep_alive(0.02, 0.2)
        await connection.aclose()
        nursery.cancel_scope.cancel()


async def test_an_unexpected_push_on_a_subscribed_connection_is_a_protocol_error() -> None:
    async def pushes(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*1\r\n$5\r\nwhat?\r\n")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await raw_server(nursery, pushes)
        async with await open_redis(parse_redis_url(f"redis://127.0.0.1:{port}")) as connection:
            subscriber = RedisSubscriber(connection)
            await subscriber.subscribe("a")
            with pytest.raises(RedisProtocolError, match="unexpected push"):
                await subscriber.next_message(2)
        nursery.cancel_scope.cancel()
