"""Replication over Redis pub/sub: its channels and what one message holds (sans-IO).

Theory of operation
-------------------
Every writer instance W of a deployment whose server name is S has two channels, under the
``[replication] redis_channel_prefix`` P (default ``trioserver``; Redis channels are shared by
every database of a Redis server, so the prefix, not the ``/db`` of the URL, keeps two
deployments apart):

- ``P/S/W``, the *stream channel*: W publishes ``SERVER S`` when it (re)connects to Redis, its
  ``POSITION`` and ``RDATA`` lines as the TCP listener would send them, and a ``PING`` every 5 s.
  Every instance that follows W's streams subscribes to it.
- ``P/S/W/commands``, the *command channel*: a follower publishes ``NAME`` and ``REPLICATE``
  once per subscription (W answers on its stream channel with a ``POSITION`` per stream), then
  ``NAME`` and ``PING`` every 5 s, so that W knows which instances are there. W subscribes.

A message is one or more whole lines of the replication protocol (`commands`), each ending in
``\\n``; so the framing, the 1 MiB line limit and which side may send which verb are
`connection.ReplConnection`'s, applied to each message on its own (`decode_message`). Redis
has its own authentication (``AUTH`` from the URL); no ``AUTH`` line travels over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.repl.commands import Command, ReplProtocolError
from trioserver.repl.connection import CLOSED, NEED_DATA, ReplConnection

if TYPE_CHECKING:
    from trioserver.repl.connection import Role

__all__ = ["WriterChannels", "decode_message", "encode_message", "writer_channels"]

# The largest message a writer publishes (unless one line is longer): small enough that a
# burst never sits in Redis's buffer for a subscriber as one huge message.
MAX_MESSAGE = 256 * 1024


@attrs.frozen
class WriterChannels:
    """The two channels of one writer instance (see the module docstring)."""

    stream: str
    commands: str

    @property
    def writer(self) -> str:
        """The writer instance's name (the last part of the stream channel)."""
        return self.stream.rpartition("/")[2]


def writer_channels(prefix: str, server_name: str, writer: str) -> WriterChannels:
    """The channels of instance `writer` of server `server_name`, under `prefix`."""
    stream = f"{prefix}/{server_name}/{writer}"
    return WriterChannels(stream, f"{stream}/commands")


def client_name(prefix: str, instance: str, purpose: str) -> str:
    """What ``CLIENT LIST`` calls a connection: e.g. ``trioserver.worker1.follows-main.sub``."""
    return f"{prefix}.{instance}.{purpose}"


def encode_message(role: Role, *commands: Command) -> bytes:
    """One message of `commands`, as `role` (``"server"``: a writer) sends them."""
    wire = ReplConnection(role)
    return b"".join(wire.send(command) for command in commands)


def decode_message(payload: bytes, receiver: Role) -> list[Command]:
    """The commands of one message, as `receiver` accepts them.

    Raises:
        ReplProtocolError: a bad line, a verb the sender's role may not send, or a message
            that does not end with a line break.
    """
    wire = ReplConnection(receiver, max_buffered=max(len(payload), 1024 * 1024 + 2))
    wire.receive_data(payload)
    wire.receive_data(b"")
    commands: list[Command] = []
    while True:
        command = wire.next_command()
        if command is CLOSED:
            return commands
        if command is NEED_DATA:  # never after EOF; for the type
            raise ReplProtocolError("message ended early")
        commands.append(command)
