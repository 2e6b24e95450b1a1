"""A follower's link to one writer over Redis pub/sub (issue 14): no TCP to the writer.

Theory of operation
-------------------
`RedisLink` is a `client.ReplicationLink`: the `client.ReplicationClient` that owns it runs
one `follow.FollowSession` per subscription, with the same catch-up, batching and
read-your-writes waits as over TCP. One connection of the link subscribes to the writer's
stream channel (`redis_channels`); once Redis has confirmed the subscription, another
publishes ``NAME`` and ``REPLICATE`` on the writer's command channel. The writer answers with a
``POSITION`` per stream on the stream channel; the session catches up from the database to it
and applies the ``RDATA`` after it. Rows published between the subscription and the
``POSITION`` arrive first and are dropped, as they are covered by the catch-up.

The subscription ends, and the client reconnects with its backoff and asks again, when:

- Redis closes the connection or stops answering the keep-alive ``PING`` (a Redis restart, a
  killed client, a subscriber Redis cut off for falling behind);
- the writer is silent for the ping timeout (it pings every 5 s), or has not answered
  ``REPLICATE`` with a ``POSITION`` for every stream within it;
- the writer publishes ``SERVER`` after it has answered: it started a new session with Redis
  (it restarted, or lost Redis) and rows may have been missed; or ``ERROR`` (it dropped rows
  for its followers: a row too long for a line, rows it could not publish in time).

While there is no subscription, or its positions have not been caught up, the client is not
connected: forwarded writes answer 503 at once (`client.ReplicationUnavailable`), as over TCP.
Every 5 s the link publishes ``NAME`` and ``PING``, so that the writer knows it is there.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from trioserver.repl.commands import (
    ErrorCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    ServerCommand,
    wall_clock_ms,
)
from trioserver.repl.follow import ConnectionLost
from trioserver.repl.redis_channels import client_name, decode_message, encode_message
from trioserver.repl.redis_client import RedisSubscriber, open_redis
from trioserver.repl.resp import RedisError, RedisReplyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from trioserver.repl.follow import FollowSession
    from trioserver.repl.redis_channels import WriterChannels
    from trioserver.repl.redis_client import RedisConnection
    from trioserver.repl.resp import RedisAddress

__all__ = ["RedisLink"]

logger = logging.getLogger(__name__)


class RedisLink:
    """A `client.ReplicationLink` to a writer's channels; see the module docstring."""

    def __init__(
        self,
        *,
        address: RedisAddress,
        channels: WriterChannels,
        instance_name: str,
        server_name: str,
        channel_prefix: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 25.0,
    ) -> None:
        self.address = address
        self.channels = channels
        self.instance_name = instance_name
        self.server_name = server_name
        self.client_name = client_name(channel_prefix, instance_name, f"follows-{channels.writer}")
        self.clock_ms = clock_ms
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s

    def describe(self) -> str:
        return f"{self.channels.stream} on {self.address.display()}"

    async def run(self, session: FollowSession) -> None:
        with _redis_errors_lost():
            sub = await open_redis(self.address, client_name=f"{self.client_name}.sub")
            try:
                pub = await open_redis(self.address, client_name=f"{self.client_name}.pub")
            except BaseException:
                with trio.CancelScope(shield=True):
                    await sub.aclose()
                raise
        async with sub, pub:
            subscriber = RedisSubscriber(sub)
            with _redis_errors_lost():
                await subscriber.subscribe(self.channels.stream)
                await self._publish(pub, ReplicateCommand())
            async with trio.open_nursery() as nursery:
                session.start(nursery)
                nursery.start_soon(self._keep_alive, subscriber)
                nursery.start_soon(self._announce, pub)
                nursery.start_soon(self._positions_deadline, session)
                await self._read(subscriber, session)

    async def _publish(
        self, pub: RedisConnection, command: ReplicateCommand | PingCommand
    ) -> None:
        message = encode_message("client", NameCommand(self.instance_name), command)
        await pub.command("PUBLISH", self.channels.commands, message)

    async def _keep_alive(self, subscriber: RedisSubscriber) -> None:
        with _redis_errors_lost():
            await subscriber.keep_alive(self.ping_interval_s, self.ping_timeout_s)

    async def _announce(self, pub: RedisConnection) -> None:
        with _redis_errors_lost():
            while True:
                await trio.sleep(self.ping_interval_s)
                await self._publish(pub, PingCommand(self.clock_ms()))

    async def _positions_deadline(self, session: FollowSession) -> None:
        await trio.sleep(self.ping_timeout_s)
        if not session.all_positioned:
            raise ConnectionLost(f"no POSITION of every stream within {self.ping_timeout_s} s")

    async def _read(self, subscriber: RedisSubscriber, session: FollowSession) -> None:
        while True:
            with _redis_errors_lost():
                message = await subscriber.next_message(self.ping_timeout_s)
            if message is None:
                raise ConnectionLost(f"nothing from the writer for {self.ping_timeout_s} s")
            # A bad message may have carried rows: ReplProtocolError ends the subscription.
            for command in decode_message(message[1], "client"):
                match command:
                    case PositionCommand() | RdataCommand():
                        session.deliver(command)
                    case ServerCommand(server_name=name) if name != self.server_name:
                        raise ConnectionLost(f"SERVER {name} on our channel, not our server")
                    case ServerCommand() if session.positions_received:
                        raise ConnectionLost("the writer started a new session")
                    case ErrorCommand(message=error):
                        raise ConnectionLost(f"the writer reports an error: {error}")
                    case _:
                        pass  # PING (it resets the silence timeout), or SERVER before ours


@contextmanager
def _redis_errors_lost() -> Iterator[None]:
    """A failure talking to Redis ends the subscription like any lost connection."""
    try:
        yield
    except RedisReplyError as e:
        # Not a network blip: a wrong password or a Redis that refuses us. Say so louder.
        logger.warning("replication: Redis refused: %s", e)
        raise ConnectionLost(str(e)) from e
    except RedisError as e:
        raise ConnectionLost(str(e)) from e
