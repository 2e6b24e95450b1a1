"""ReplConnection: framing, the line limit, direction rules and EOF, with no I/O."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trioserver.repl.commands import (
    Command,
    ErrorCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    ReplProtocolError,
    ServerCommand,
)
from trioserver.repl.connection import (
    CLOSED,
    DEFAULT_MAX_LINE,
    NEED_DATA,
    ConnectionSignal,
    ReplConnection,
)


def _drain(conn: ReplConnection) -> list[Command | ConnectionSignal]:
    """Every command now available, then the signal that ended the run."""
    out: list[Command | ConnectionSignal] = []
    while True:
        item = conn.next_command()
        out.append(item)
        if item is NEED_DATA or item is CLOSED:
            return out


def test_handshake_between_two_ends() -> None:
    server = ReplConnection("server")
    client = ReplConnection("client")
    hello: list[Command] = [ServerCommand("blue"), PingCommand(1)]
    for command in hello:
        client.receive_data(server.send(command))
    assert _drain(client) == [ServerCommand("blue"), PingCommand(1), NEED_DATA]
    answer: list[Command] = [NameCommand("worker1"), PingCommand(2), ReplicateCommand()]
    for command in answer:
        server.receive_data(client.send(command))
    assert _drain(server) == [
        NameCommand("worker1"),
        PingCommand(2),
        ReplicateCommand(),
        NEED_DATA,
    ]
    position = PositionCommand("events", "main", 7, 7)
    row = RdataCommand("events", "main", 8, {"event_id": "$e:blue"})
    client.receive_data(server.send(position) + server.send(row))
    assert _drain(client) == [position, row, NEED_DATA]


def test_send_gives_one_utf8_line() -> None:
    conn = ReplConnection("server")
    data = conn.send(RdataCommand("events", "main", 1, {"body": "héllo wörld"}))
    assert data == 'RDATA events main 1 {"body":"héllo wörld"}\n'.encode()
    assert data.count(b"\n") == 1
    assert ReplConnection("client").send(ReplicateCommand()) == b"REPLICATE\n"


def test_nothing_received_needs_data() -> None:
    conn = ReplConnection("client")
    assert conn.next_command() is NEED_DATA
    assert conn.next_command() is NEED_DATA
    assert conn.buffered == 0


def test_partial_line_across_receive_data_calls() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b"POSITION eve")
    assert conn.next_command() is NEED_DATA
    conn.receive_data(b"nts main 1")
    assert conn.next_command() is NEED_DATA
    conn.receive_data(b" 2")
    assert conn.next_command() is NEED_DATA
    conn.receive_data(b"\nPI")
    assert conn.next_command() == PositionCommand("events", "main", 1, 2)
    assert conn.next_command() is NEED_DATA
    assert conn.buffered == 2
    conn.receive_data(b"NG 5\n")
    assert _drain(conn) == [PingCommand(5), NEED_DATA]


def test_a_line_fed_one_byte_at_a_time() -> None:
    conn = ReplConnection("client")
    data = b'RDATA events main batch {"a": "b c"}\r\nRDATA events main 9 {}\n'
    got: list[Command | ConnectionSignal] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        got.extend(item for item in _drain(conn) if item is not NEED_DATA)
    assert got == [
        RdataCommand("events", "main", None, {"a": "b c"}),
        RdataCommand("events", "main", 9, {}),
    ]


def test_a_utf8_character_split_across_chunks() -> None:
    conn = ReplConnection("client")
    data = "ERROR café\n".encode()
    split = data.index(b"\xa9")  # the second byte of "é"
    conn.receive_data(data[:split])
    assert conn.next_command() is NEED_DATA
    conn.receive_data(data[split:])
    assert conn.next_command() == ErrorCommand("café")


def test_several_commands_in_one_chunk() -> None:
    conn = ReplConnection("client")
    conn.receive_data(
        b"SERVER blue\nPING 1\nPOSITION events main 1 3\nPOSITION typing main 0 0\n"
        b'RDATA events main 4 {"n": 1}\nERROR bye\n'
    )
    assert _drain(conn) == [
        ServerCommand("blue"),
        PingCommand(1),
        PositionCommand("events", "main", 1, 3),
        PositionCommand("typing", "main", 0, 0),
        RdataCommand("events", "main", 4, {"n": 1}),
        ErrorCommand("bye"),
        NEED_DATA,
    ]


def test_crlf_and_blank_lines() -> None:
    conn = ReplConnection("server")
    conn.receive_data(b"NAME w1\r\n\r\n\n   \nREPLICATE \r\nPING 3\n")
    assert _drain(conn) == [NameCommand("w1"), ReplicateCommand(), PingCommand(3), NEED_DATA]


def test_crlf_split_between_chunks() -> None:
    conn = ReplConnection("server")
    conn.receive_data(b"PING 3\r")
    assert conn.next_command() is NEED_DATA
    conn.receive_data(b"\n")
    assert conn.next_command() == PingCommand(3)


# Direction rules.

SERVER_ONLY = [
    ServerCommand("blue"),
    PositionCommand("events", "main", 1, 2),
    RdataCommand("events", "main", 2, {}),
]
CLIENT_ONLY = [NameCommand("w1"), ReplicateCommand()]
BOTH = [PingCommand(1), ErrorCommand("oops")]


@pytest.mark.parametrize("command", SERVER_ONLY + BOTH, ids=lambda c: c.NAME)
def test_server_may_send(command: Command) -> None:
    client = ReplConnection("client")
    client.receive_data(ReplConnection("server").send(command))
    assert client.next_command() == command


@pytest.mark.parametrize("command", CLIENT_ONLY + BOTH, ids=lambda c: c.NAME)
def test_client_may_send(command: Command) -> None:
    server = ReplConnection("server")
    server.receive_data(ReplConnection("client").send(command))
    assert server.next_command() == command


@pytest.mark.parametrize("command", CLIENT_ONLY, ids=lambda c: c.NAME)
def test_server_may_not_send_client_verbs(command: Command) -> None:
    with pytest.raises(ReplProtocolError, match=f"the server may not send {command.NAME}"):
        ReplConnection("server").send(command)


@pytest.mark.parametrize("command", SERVER_ONLY, ids=lambda c: c.NAME)
def test_client_may_not_send_server_verbs(command: Command) -> None:
    with pytest.raises(ReplProtocolError, match=f"the client may not send {command.NAME}"):
        ReplConnection("client").send(command)


@pytest.mark.parametrize("command", SERVER_ONLY, ids=lambda c: c.NAME)
def test_server_refuses_server_verbs_from_a_client(command: Command) -> None:
    server = ReplConnection("server")
    server.receive_data(command.to_line().encode() + b"\n")
    with pytest.raises(
        ReplProtocolError, match=f"^invalid command: {command.NAME} \\(the client may not send it"
    ):
        server.next_command()


@pytest.mark.parametrize("command", CLIENT_ONLY, ids=lambda c: c.NAME)
def test_client_refuses_client_verbs_from_the_server(command: Command) -> None:
    client = ReplConnection("client")
    client.receive_data(command.to_line().encode() + b"\n")
    with pytest.raises(ReplProtocolError, match=f"invalid command: {command.NAME} \\(the server"):
        client.next_command()


def test_roles() -> None:
    assert ReplConnection("server").peer_role == "client"
    assert ReplConnection("client").peer_role == "server"
    with pytest.raises(ValueError, match="role"):
        ReplConnection("worker")  # type: ignore[arg-type]


# Bad lines and the broken state.


def test_bad_line_raises_and_the_connection_stays_broken() -> None:
    server = ReplConnection("server")
    server.receive_data(b"PING 1\nPING soon\nPING 2\n")
    assert server.next_command() == PingCommand(1)
    with pytest.raises(ReplProtocolError, match="bad PING line") as first:
        server.next_command()
    with pytest.raises(ReplProtocolError) as again:
        server.next_command()
    assert str(again.value) == str(first.value)
    # The caller can still tell the peer why before closing.
    assert server.send(ErrorCommand(str(first.value))).startswith(b"ERROR bad PING line")


def test_unknown_verb() -> None:
    conn = ReplConnection("server")
    conn.receive_data(b"USER_IP @u:blue []\n")
    with pytest.raises(ReplProtocolError, match="unknown command 'USER_IP'"):
        conn.next_command()


def test_invalid_utf8() -> None:
    conn = ReplConnection("server")
    conn.receive_data(b"ERROR \xff\xfe\n")
    with pytest.raises(ReplProtocolError, match="not valid UTF-8"):
        conn.next_command()


# The line limit.


def test_default_limits() -> None:
    conn = ReplConnection("server")
    assert conn.max_line == DEFAULT_MAX_LINE == 1024 * 1024
    assert conn.max_buffered >= conn.max_line + 2


def test_line_at_the_limit_is_accepted_with_lf_or_crlf() -> None:
    prefix = b"ERROR "
    line = prefix + b"x" * (100 - len(prefix))
    for ending in (b"\n", b"\r\n"):
        conn = ReplConnection("client", max_line=100, max_buffered=1000)
        conn.receive_data(line)
        assert conn.next_command() is NEED_DATA
        if ending == b"\r\n":
            conn.receive_data(b"\r")
            assert conn.next_command() is NEED_DATA
            conn.receive_data(b"\n")
        else:
            conn.receive_data(ending)
        assert conn.next_command() == ErrorCommand("x" * 94)


def test_long_line_is_refused_as_soon_as_it_passes_the_limit() -> None:
    conn = ReplConnection("client", max_line=100, max_buffered=1000)
    conn.receive_data(b"ERROR " + b"x" * 94)
    assert conn.next_command() is NEED_DATA
    conn.receive_data(b"y")
    with pytest.raises(ReplProtocolError, match="line of 101 bytes so far, without a newline"):
        conn.next_command()


def _feed_until_error(conn: ReplConnection, piece: bytes, rounds: int) -> tuple[int, str]:
    """Feed ``piece`` and read after each, until a protocol error; bytes fed and its message."""
    for i in range(1, rounds + 1):
        conn.receive_data(piece)
        try:
            assert conn.next_command() is NEED_DATA
        except ReplProtocolError as e:
            return i * len(piece), str(e)
    raise AssertionError(f"no error after {rounds} pieces")


def test_long_line_fed_in_small_pieces_fails_before_its_newline() -> None:
    conn = ReplConnection("client", max_line=1000, max_buffered=4000)
    conn.receive_data(b'RDATA events main 1 "')
    fed, message = _feed_until_error(conn, b"z" * 7, 1000)
    assert "longer than the limit of 1000" in message
    assert 1000 < 21 + fed <= 1007
    # The newline never came, and nothing after the error is parsed.
    with pytest.raises(ReplProtocolError, match="longer than the limit"):
        conn.next_command()


def test_long_line_with_its_newline_in_one_chunk() -> None:
    conn = ReplConnection("client", max_line=100, max_buffered=1000)
    conn.receive_data(b"PING 1\nERROR " + b"x" * 200 + b"\nPING 2\n")
    assert conn.next_command() == PingCommand(1)
    with pytest.raises(ReplProtocolError, match="line of 206 bytes is longer than the limit"):
        conn.next_command()


def test_default_limit_with_a_megabyte_line_in_64k_chunks() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b'RDATA caches main 1 "')
    fed, message = _feed_until_error(conn, b"a" * 65536, 20)
    assert "so far, without a newline" in message
    assert fed == 16 * 65536
    assert conn.buffered <= DEFAULT_MAX_LINE + 65536


def test_send_refuses_a_line_over_the_limit() -> None:
    conn = ReplConnection("server", max_line=50, max_buffered=200)
    assert conn.send(RdataCommand("events", "main", 1, "x" * 20))
    with pytest.raises(ReplProtocolError, match="RDATA line of 82 bytes is longer than the limit"):
        conn.send(RdataCommand("events", "main", 1, "x" * 60))


def test_max_buffered_bounds_unread_input() -> None:
    conn = ReplConnection("server", max_line=10, max_buffered=30)
    conn.receive_data(b"PING 1\n" * 4)
    with pytest.raises(ReplProtocolError, match="more than 30 bytes"):
        conn.receive_data(b"PING 2\n")
    with pytest.raises(ReplProtocolError, match="more than 30 bytes"):
        conn.next_command()


def test_limits_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="max_line"):
        ReplConnection("server", max_line=0)
    with pytest.raises(ValueError, match="max_buffered"):
        ReplConnection("server", max_line=100, max_buffered=101)


# EOF.


def test_eof_after_whole_lines_returns_them_then_closed() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b"PING 1\nPING 2\n")
    conn.receive_data(b"")
    assert conn.peer_closed
    assert _drain(conn) == [PingCommand(1), PingCommand(2), CLOSED]
    assert conn.next_command() is CLOSED
    assert conn.next_command() is CLOSED


def test_eof_with_nothing_received() -> None:
    conn = ReplConnection("server")
    conn.receive_data(b"")
    assert conn.next_command() is CLOSED


def test_eof_after_a_crlf_line() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b"PING 1\r\n")
    conn.receive_data(b"")
    assert _drain(conn) == [PingCommand(1), CLOSED]


def test_eof_in_the_middle_of_a_line_is_an_error() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b"PING 1\nPOSITION events ma")
    conn.receive_data(b"")
    assert conn.next_command() == PingCommand(1)
    with pytest.raises(ReplProtocolError, match=r"closed in the middle of a line \(18 bytes\)"):
        conn.next_command()
    with pytest.raises(ReplProtocolError, match="closed in the middle of a line"):
        conn.next_command()


def test_eof_twice_is_harmless_but_data_after_eof_is_a_bug() -> None:
    conn = ReplConnection("client")
    conn.receive_data(b"")
    conn.receive_data(b"")
    with pytest.raises(RuntimeError, match="after EOF"):
        conn.receive_data(b"PING 1\n")
    assert conn.next_command() is CLOSED


def test_signals_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(CLOSED) == "CLOSED"


def test_the_protocol_layer_imports_no_io_library() -> None:
    code = (
        "import sys, trioserver.repl\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'trio', 'anyio', 'asyncio', 'socket', 'hypercorn', 'quart'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
