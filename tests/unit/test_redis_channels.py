"""Replication over Redis (issue 14): channel names, and a message as whole lines."""

from __future__ import annotations

import pytest

from trioserver.repl.commands import (
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
)
from trioserver.repl.redis_channels import (
    WriterChannels,
    client_name,
    decode_message,
    encode_message,
    writer_channels,
)


def test_each_writer_has_a_stream_and_a_command_channel() -> None:
    channels = writer_channels("trioserver", "example.com:8448", "worker1")
    assert channels == WriterChannels(
        "trioserver/example.com:8448/worker1", "trioserver/example.com:8448/worker1/commands"
    )
    assert channels.writer == "worker1"
    assert client_name("trioserver", "worker2", "follows-main.sub") == (
        "trioserver.worker2.follows-main.sub"
    )


def test_a_message_is_whole_lines_of_the_line_protocol() -> None:
    writer = encode_message(
        "server",
        ServerCommand("example.com"),
        PositionCommand("events", "main", 4, 4),
        RdataCommand("events", "main", None, {"a": "x\ny"}),
        RdataCommand("events", "main", 5, {"b": 1}),
    )
    assert writer == (
        b"SERVER example.com\nPOSITION events main 4 4\n"
        b'RDATA events main batch {"a":"x\\ny"}\nRDATA events main 5 {"b":1}\n'
    )
    assert decode_message(writer, "client")[3] == RdataCommand("events", "main", 5, {"b": 1})
    follower = encode_message("client", NameCommand("worker1"), ReplicateCommand())
    assert follower == b"NAME worker1\nREPLICATE\n"
    assert decode_message(follower, "server") == [NameCommand("worker1"), ReplicateCommand()]
    assert decode_message(b"PING 5\r\n\n", "server") == [PingCommand(5)]


@pytest.mark.parametrize(
    ("payload", "receiver", "message"),
    [
        (b"NAME worker1\nREPLICATE", "server", "closed in the middle of a line"),
        (b"REPLICATE\n", "client", "the server may not send it"),
        (b"RDATA events main 1 {}\n", "server", "the client may not send it"),
        (b"POSITION events main 5 4\n", "client", "prev_token 5 is after new_token 4"),
        (b"\xff\n", "server", "not valid UTF-8"),
    ],
)
def test_a_bad_message_raises(payload: bytes, receiver: str, message: str) -> None:
    with pytest.raises(ReplProtocolError, match=message):
        decode_message(payload, receiver)  # type: ignore[arg-type]
