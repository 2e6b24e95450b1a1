"""Replication commands: round trips, Synapse's lines, and every kind of bad line."""

from __future__ import annotations

import pytest

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

EXAMPLES: list[Command] = [
    ServerCommand("blue.example:8448"),
    NameCommand("worker-1"),
    AuthCommand("s3cret"),
    AuthCommand("a secret with spaces"),
    PingCommand(0),
    PingCommand(1_589_212_345_678),
    ReplicateCommand(),
    PositionCommand("events", "main", 10, 12),
    PositionCommand("backfill", "main", -5, -5),
    RdataCommand("events", "main", 12, {"event_id": "$a:blue", "room_id": "!r:blue"}),
    RdataCommand("caches", "main", None, {"cache": "get_user", "keys": ["@u:blue"], "ts": 1}),
    RdataCommand("typing", "w1", 3, {"room_id": "!r:blue", "user_ids": []}),
    RdataCommand("receipts", "main", 4, ["!r:blue", "m.read", "@u:blue", "$e:blue", {"a": 1}]),
    RdataCommand("caches", "main", 5, None),
    RdataCommand("x", "main", 6, "text with spaces and \n newline and unicode é"),
    ErrorCommand("failed to keep up"),
    ErrorCommand(""),
]


@pytest.mark.parametrize("command", EXAMPLES, ids=lambda c: c.to_line()[:40])
def test_round_trip(command: Command) -> None:
    line = command.to_line()
    assert "\n" not in line
    assert "\r" not in line
    assert line.split(" ", 1)[0] == command.NAME
    assert parse_line(line) == command


def test_every_verb_has_an_example_and_a_direction() -> None:
    assert {type(c) for c in EXAMPLES} == set(COMMANDS.values())
    assert all(name == cls.NAME for name, cls in COMMANDS.items())
    assert set(COMMANDS) == SERVER_SENDS | CLIENT_SENDS
    assert {"SERVER", "POSITION", "RDATA", "PING", "ERROR"} == SERVER_SENDS
    assert {"NAME", "AUTH", "REPLICATE", "PING", "ERROR"} == CLIENT_SENDS


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("REPLICATE ", ReplicateCommand()),
        ("REPLICATE", ReplicateCommand()),
        ("REPLICATE   ", ReplicateCommand()),
        ("SERVER blue", ServerCommand("blue")),
        ("NAME generic_worker", NameCommand("generic_worker")),
        ("PING 1589212345678", PingCommand(1589212345678)),
        ("POSITION events master 53 54", PositionCommand("events", "master", 53, 54)),
        (
            'RDATA events master batch {"event_id": "$x:blue", "room_id": "!r:blue"}',
            RdataCommand("events", "master", None, {"event_id": "$x:blue", "room_id": "!r:blue"}),
        ),
        (
            'RDATA receipts master 3 ["!room:blue","m.read","@feeling:blue","$e:blue",{"a":1}]',
            RdataCommand(
                "receipts",
                "master",
                3,
                ["!room:blue", "m.read", "@feeling:blue", "$e:blue", {"a": 1}],
            ),
        ),
        (
            'RDATA caches master 54 ["cs_cache_fake", null, 1589212345678]',
            RdataCommand("caches", "master", 54, ["cs_cache_fake", None, 1589212345678]),
        ),
        ("ERROR invalid command: RDATA", ErrorCommand("invalid command: RDATA")),
        ("ERROR  two  spaces ", ErrorCommand(" two  spaces ")),
        ("ERROR", ErrorCommand("")),
    ],
)
def test_synapse_lines(line: str, expected: Command) -> None:
    assert parse_line(line) == expected


def test_rdata_json_may_contain_spaces_and_the_token_batch() -> None:
    command = parse_line('RDATA events main batch {"a b": "c d", "e": [1, 2 ,3]}')
    assert isinstance(command, RdataCommand)
    assert command.token is None
    assert command.row == {"a b": "c d", "e": [1, 2, 3]}
    assert command.to_line() == 'RDATA events main batch {"a b":"c d","e":[1,2,3]}'


def _error(line: str) -> str:
    with pytest.raises(ReplProtocolError) as info:
        parse_line(line)
    return str(info.value)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        # Unknown or missing verbs.
        ("", "no command"),
        (" PING 1", "no command"),
        ("FOO bar", "unknown command 'FOO'"),
        ("ping 1", "unknown command 'ping'"),
        ("USER_SYNC w1 @u:blue start 1", "unknown command 'USER_SYNC'"),
        ("INVALIDATE_CACHE get_user []", "unknown command 'INVALIDATE_CACHE'"),
        # Missing arguments.
        ("SERVER", "missing argument(s): server_name"),
        ("SERVER ", "missing argument(s): server_name"),
        ("NAME", "missing argument(s): instance_name"),
        ("PING", "missing argument(s): timestamp_ms"),
        ("POSITION events", "missing argument(s): instance_name, prev_token, new_token"),
        ("POSITION events main 3", "missing argument(s): new_token"),
        ("RDATA events main 3", "missing argument(s): json"),
        ("RDATA", "missing argument(s): stream_name, instance_name, token, json"),
        # Extra arguments.
        ("SERVER blue green", "too many arguments"),
        ("SERVER blue ", "too many arguments"),
        ("NAME w1 w2", "too many arguments"),
        ("PING 1 2", "too many arguments"),
        ("POSITION events main 1 2 3", "too many arguments"),
        ("REPLICATE events 0", "takes no arguments"),
        ("REPLICATE ALL NOW", "takes no arguments"),
        # Bad integers.
        ("PING soon", "timestamp is not a non-negative integer: 'soon'"),
        ("PING -1", "timestamp is not a non-negative integer"),
        ("PING 1.5", "not a non-negative integer"),
        ("POSITION events main x 2", "prev_token is not an integer: 'x'"),
        ("POSITION events main 1 +2", "new_token is not an integer: '+2'"),
        ("POSITION events main 1 1_000", "new_token is not an integer"),
        ("POSITION events main 1 \u0663", "new_token is not an integer"),
        ("POSITION events main 5 4", "prev_token 5 is after new_token 4"),
        ("RDATA events main NOW {}", "token is not an integer: 'NOW'"),
        ("RDATA events main Batch {}", "token is not an integer: 'Batch'"),
        # Bad JSON.
        ("RDATA events main 1 {bad}", "the row is not valid JSON"),
        ("RDATA events main 1 ", "the row is not valid JSON"),
        ('RDATA events main 1 {"a": 1} trailing', "the row is not valid JSON"),
        ("RDATA events main 1 NaN", "the row is not valid JSON"),
        # Bad names.
        ("POSITION  main 1 2", "stream name is empty"),
        ("POSITION events  1 2", "instance name is empty"),
        ("RDATA ev\x00ents main 1 {}", "stream name 'ev\\x00ents' contains a space or control"),
        ("RDATA events ma\tin 1 {}", "instance name 'ma\\tin' contains a space or control"),
        ("POSITION events ma\u00a0in 1 2", "contains a space or control"),
        ("POSITION events main\x7f 1 2", "contains a space or control"),
        ("NAME w\u20281", "contains a space or control"),
        ("SERVER bl\x1bue", "server name 'bl\\x1bue' contains a space or control"),
        # A line break inside an ERROR message cannot come off the wire whole.
        ("ERROR first\rsecond", "line break"),
    ],
)
def test_bad_lines(line: str, fragment: str) -> None:
    message = _error(line)
    assert fragment in message
    verb = line.split(" ", 1)[0]
    if verb in COMMANDS:
        assert message.startswith(f"bad {verb} line (")
        assert repr(line[:100]) in message


def test_error_messages_quote_at_most_the_start_of_a_long_line() -> None:
    message = _error("POSITION events main 1 " + "9" * 100_000 + "x")
    assert len(message) < 300


def test_constructors_validate_so_to_line_is_always_parseable() -> None:
    with pytest.raises(ReplProtocolError, match="stream name is empty"):
        RdataCommand("", "main", 1, {})
    with pytest.raises(ReplProtocolError, match="contains a space"):
        PositionCommand("events", "two words", 1, 2)
    with pytest.raises(ReplProtocolError, match="is after"):
        PositionCommand("events", "main", 3, 2)
    with pytest.raises(ReplProtocolError, match="negative"):
        PingCommand(-1)
    with pytest.raises(ReplProtocolError, match="line break"):
        ErrorCommand("one\ntwo")
    with pytest.raises(ReplProtocolError, match="server name is empty"):
        ServerCommand("")
    with pytest.raises(ReplProtocolError, match="instance name"):
        NameCommand("a b")


def test_auth_never_shows_its_secret() -> None:
    command = AuthCommand("hunter2")
    assert "hunter2" not in repr(command)
    assert "hunter2" not in str(command)
    assert command.to_line() == "AUTH hunter2"
    assert parse_line("AUTH hunter2") == command
    with pytest.raises(ReplProtocolError, match="secret is empty") as info:
        parse_line("AUTH")
    assert str(info.value) == "bad AUTH line (the secret is empty): 'AUTH'"
    with pytest.raises(ReplProtocolError, match="line break") as info:
        parse_line("AUTH hunter\r2")
    assert "hunter" not in str(info.value)


def test_commands_are_frozen() -> None:
    command = PositionCommand("events", "main", 1, 2)
    with pytest.raises(AttributeError):
        command.new_token = 3  # type: ignore[misc]
