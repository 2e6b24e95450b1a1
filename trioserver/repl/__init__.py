"""Replication between instances (issue 13).

Theory of operation
-------------------
Main runs a replication listener; each worker connects to it, sends ``REPLICATE``, is told each
stream's current position (``POSITION``, never a backlog of old rows: SEED-SPEC seed 3), catches
up from the shared database and then applies the live rows (``RDATA``) main sends. The
protocol layer has no I/O and no trio (STYLE S7): `commands` (one frozen class per wire verb,
`parse_line`) and `connection` (`ReplConnection`: framing, line limit, direction rules).
`streams` has the protocols each stream implements on both sides. What does not depend on the
transport is shared: `streamer` (the writer's rows to lines) and `follow` (a follower's
catch-up and live rows). The trio loops are `server.ReplicationServer` (the TCP listener) and
`client.ReplicationClient` (a follower, through a `client.TcpLink`), or over Redis pub/sub
(issue 14) `redis_server.RedisReplicationServer` and `redis_link.RedisLink`, with
`redis_channels` (channels, messages) on the small Redis client of `resp` and
`redis_client`. They are imported from their modules so that this package stays free of trio.
"""

from trioserver.repl.commands import (
    CLIENT_SENDS,
    COMMANDS,
    SERVER_SENDS,
    AuthCommand,
    Command,
    ErrorCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
    parse_line,
)
from trioserver.repl.connection import (
    CLOSED,
    NEED_DATA,
    Closed,
    ConnectionSignal,
    NeedData,
    ReplConnection,
    Role,
)

__all__ = [
    "CLIENT_SENDS",
    "CLOSED",
    "COMMANDS",
    "NEED_DATA",
    "SERVER_SENDS",
    "AuthCommand",
    "Closed",
    "Command",
    "ConnectionSignal",
    "ErrorCommand",
    "NameCommand",
    "NeedData",
    "PingCommand",
    "PositionCommand",
    "RdataCommand",
    "ReplConnection",
    "ReplProtocolError",
    "ReplicateCommand",
    "Role",
    "ServerCommand",
    "parse_line",
]
