"""A writer's replication over Redis pub/sub (issue 14): publishes its streams to a channel.

Theory of operation
-------------------
In place of the TCP listener (`server`), a writer with ``[replication] redis`` keeps one
*session* with Redis at a time: a connection that publishes on its stream channel and one
subscribed to its command channel (`redis_channels`). A session starts by publishing
``SERVER`` and a ``POSITION`` per stream, and its `streamer.Outbox` joins the same
`streamer.Streamer` the TCP listener uses; so a follower that hears a session from its start,
or asks with ``REPLICATE`` (answered with a ``POSITION`` per stream at the published token, on
the stream channel), gets every row after that ``POSITION`` exactly once and catches up on the
rows before it from the database, as over TCP (seed 3: never a backlog).

Redis keeps nothing for a subscriber that is not there, and a slow subscriber is Redis's to cut
off (``client-output-buffer-limit pubsub``); either way the follower reconnects, asks again
and catches up. When the writer's own session fails (Redis restarted, a connection killed or
silent for the ping timeout, more than ``max_buffered`` bytes waiting to be published) it is
logged and a new session starts after a backoff (0.1 s doubling to 5 s): its ``SERVER`` tells
every follower that rows may have been missed, and they start over. Meanwhile the streamer
only advances its tokens, as with no TCP peer.

Followers announce themselves on the command channel (``NAME`` with each ``REPLICATE`` and
``PING``). An instance that is not heard for the ping timeout, that sends ``REPLICATE`` again
(a new subscription of its own), or that was there when this writer's session restarted, is
reported to the disconnect listeners, as a closed TCP connection is (main ends its presence
syncs; the instance announces them again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from trioserver.errors import StartupError
from trioserver.repl.commands import (
    AuthCommand,
    ErrorCommand,
    NameCommand,
    PingCommand,
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
    wall_clock_ms,
)
from trioserver.repl.redis_channels import MAX_MESSAGE, client_name, decode_message
from trioserver.repl.redis_client import RedisSubscriber, open_redis
from trioserver.repl.resp import RedisError, RedisProtocolError, RedisReplyError
from trioserver.repl.streamer import Outbox, Streamer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.repl.redis_channels import WriterChannels
    from trioserver.repl.redis_client import RedisConnection
    from trioserver.repl.resp import RedisAddress
    from trioserver.repl.streams import WriterStream

__all__ = ["RedisReplicationServer"]

logger = logging.getLogger(__name__)


class _SessionOver(Exception):
    """The outbox finished (too slow, or a row too long): start a new session."""


class RedisReplicationServer:
    """A writer's streams published over Redis; see the module docstring."""

    def __init__(
        self,
        streams: Sequence[WriterStream],
        *,
        address: RedisAddress,
        channels: WriterChannels,
        server_name: str,
        instance_name: str,
        channel_prefix: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_buffered: int = 8 * 1024 * 1024,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 25.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._streamer = Streamer(streams, instance_name=instance_name)
        self._address = address
        self._channels = channels
        self._server_name = server_name
        self._client_name = client_name(channel_prefix, instance_name, "writer")
        self._clock_ms = clock_ms
        self._max_buffered = max_buffered
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._backoff = (backoff_min_s, backoff_max_s)
        # Instances heard on the command channel, and when (trio time).
        self._followers: dict[str, float] = {}
        self._disconnect_listeners: list[Callable[[str], None]] = []
        self.sessions = 0
        """Sessions with Redis started so far (for tests and metrics)."""

    def add_disconnect_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(instance_name)` when a follower is gone (see the module doc)."""
        self._disconnect_listeners.append(callback)

    def poke(self) -> None:
        """Some stream may have advanced: let the streamer look. Sync and cheap."""
        self._streamer.poke()

    def published_token(self, stream_name: str) -> int:
        """The token up to which `stream_name`'s rows have been published."""
        return self._streamer.published_token(stream_name)

    def followers(self) -> set[str]:
        """The instances heard on the command channel lately."""
        return set(self._followers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish until cancelled, reconnecting to Redis as needed.

        ``task_status.started()`` after the first session with Redis began, or failed to
        (Redis may come later; the server goes on meanwhile).

        Raises:
            StartupError: on the first attempt, Redis refused the login (a wrong password).

        Checkpoint: yes.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._streamer.run)
            nursery.start_soon(self._expire_followers)
            await nursery.start(self._run_forever)
            task_status.started()

    async def _run_forever(self, *, task_status: trio.TaskStatus[None]) -> None:
        backoff_min, backoff_max = self._backoff
        backoff = backoff_min
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        while True:
            sessions = self.sessions
            try:
                await self._session(report)
            except* RedisReplyError as group:
                if not reported:
                    raise StartupError(
                        f"config.replication.redis: {group.exceptions[0]}"
                    ) from None
                logger.warning("replication: Redis refused: %s", group.exceptions[0])
            except* (RedisError, _SessionOver) as group:
                logger.info("replication: Redis session ended: %s", group.exceptions[0])
            except* Exception:
                # Boundary: one session (STYLE S4); the next one starts over.
                logger.exception("replication: Redis session failed")
            if not reported:
                logger.warning(
                    "replication: no Redis at %s yet; still trying", self._address.display()
                )
                report()
            if self.sessions > sessions:
                backoff = backoff_min
            await trio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)

    async def _session(self, started: Callable[[], None]) -> None:
        channels = self._channels
        async with (
            await open_redis(self._address, client_name=f"{self._client_name}.sub") as sub,
            await open_redis(self._address, client_name=f"{self._client_name}.pub") as pub,
        ):
            subscriber = RedisSubscriber(sub)
            await subscriber.subscribe(channels.commands)
            # Every follower starts over on this session's SERVER: forget them.
            for name in list(self._followers):
                self._gone(name)
            outbox = Outbox(
                f"Redis channel {channels.stream}", self._max_buffered, max_chunk=MAX_MESSAGE
            )
            outbox.send_nowait(ServerCommand(self._server_name))
            self._streamer.join(outbox)
            self.sessions += 1
            started()
            logger.info("replication: publishing on %s", channels.stream)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        subscriber.keep_alive, self._ping_interval_s, self._ping_timeout_s
                    )
                    nursery.start_soon(self._read_commands, subscriber, outbox)
                    nursery.start_soon(self._ping_loop, outbox)

                    async def publish(data: bytes) -> None:
                        await _publish(pub, channels.stream, data)

                    await outbox.write_loop(publish)
                    raise _SessionOver("the outbox finished (a follower must catch up)")
            finally:
                self._streamer.leave(outbox)

    async def _ping_loop(self, outbox: Outbox) -> None:
        while True:
            await trio.sleep(self._ping_interval_s)
            outbox.send_nowait(PingCommand(self._clock_ms()))

    async def _read_commands(self, subscriber: RedisSubscriber, outbox: Outbox) -> None:
        while True:
            message = await subscriber.next_message()
            assert message is not None  # no timeout
            try:
                commands = decode_message(message[1], "server")
            except ReplProtocolError as e:
                # Anyone who can publish on Redis could send this: drop it, not the session.
                logger.warning("replication: bad message on %s: %s", self._channels.commands, e)
                continue
            name, known = "?", False
            for command in commands:
                match command:
                    case NameCommand(instance_name=name):
                        known = name in self._followers
                        self._followers[name] = trio.current_time()
                    case ReplicateCommand():
                        # A new subscription of an instance heard before: its earlier one is
                        # over.
                        if known:
                            self._gone(name)
                            self._followers[name] = trio.current_time()
                        for position in self._streamer.positions():
                            outbox.send_nowait(position)
                    case ErrorCommand(message=error):
                        logger.warning("replication: %s reports an error: %s", name, error)
                    case AuthCommand():
                        logger.warning("replication: %s sent AUTH over Redis; ignored", name)
                    case _:
                        pass  # PING: the NAME before it was the point

    async def _expire_followers(self) -> None:
        while True:
            await trio.sleep(self._ping_interval_s)
            deadline = trio.current_time() - self._ping_timeout_s
            for name, seen in list(self._followers.items()):
                if seen < deadline:
                    logger.info("replication: %s not heard for %s s", name, self._ping_timeout_s)
                    self._gone(name)

    def _gone(self, name: str) -> None:
        self._followers.pop(name, None)
        for listener in self._disconnect_listeners:
            listener(name)


async def _publish(pub: RedisConnection, channel: str, data: bytes) -> None:
    receivers = await pub.command("PUBLISH", channel, data)
    if not isinstance(receivers, int):
        raise RedisProtocolError(f"PUBLISH answered {receivers!r:.100}, not a number")
