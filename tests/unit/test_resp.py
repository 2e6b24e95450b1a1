"""RESP without I/O (issue 14): Redis URLs, commands out, replies in (hiredis)."""

from __future__ import annotations

import pytest

from trioserver.repl.resp import (
    NEED_DATA,
    RedisAddress,
    RedisProtocolError,
    RedisReplyError,
    RespParser,
    encode_command,
    parse_redis_url,
)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6379/0", RedisAddress("127.0.0.1")),
        ("redis://127.0.0.1", RedisAddress("127.0.0.1")),
        ("redis://redis.internal:6380/3", RedisAddress("redis.internal", 6380, 3)),
        ("redis://[::1]:7000/", RedisAddress("::1", 7000)),
        ("redis://:s3cret@10.0.0.5/2", RedisAddress("10.0.0.5", db=2, password="s3cret")),
        ("redis://:p%40ss%2Fw@h", RedisAddress("h", password="p@ss/w")),
        ("redis://bot:pw@h:1", RedisAddress("h", 1, username="bot", password="pw")),
    ],
)
def test_redis_urls(url: str, address: RedisAddress) -> None:
    parsed = parse_redis_url(url)
    assert parsed == address
    assert parsed.password == address.password


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://h", r"rediss:// \(TLS\) is not supported"),
        ("http://h:6379", r"must start with redis://"),
        ("127.0.0.1:6379", r"must start with redis://"),
        ("redis://", r"no host"),
        ("redis://h:notaport", r"not a redis:// URL"),
        ("redis://h:0", r"port must be between 1 and 65535"),
        ("redis://h:70000", r"not a redis:// URL"),
        ("redis://h/db1", r"database must be a number"),
        ("redis://h/-1", r"database must be a number"),
        ("redis://h/0?timeout=1", r"query strings"),
        ("redis://bot@h", r"a user needs a password"),
        ("redis://:@h", r"the password is empty"),
    ],
)
def test_bad_redis_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)


def test_the_password_is_never_shown() -> None:
    address = parse_redis_url("redis://bot:hunter2@h:1/4")
    assert "hunter2" not in repr(address)
    assert address.display() == "redis://bot@h:1/4"
    assert parse_redis_url("redis://[::1]").display() == "redis://[::1]:6379/0"


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert encode_command("SELECT", 12) == b"*2\r\n$6\r\nSELECT\r\n$2\r\n12\r\n"
    # Binary and multi-byte payloads are sent by their byte length, newlines and all.
    assert encode_command("PUBLISH", "é", b"a\r\nb\n") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\n\xc3\xa9\r\n$5\r\na\r\nb\n\r\n"
    )


def test_replies_arrive_whole_in_any_pieces() -> None:
    wire = b"+OK\r\n:3\r\n$-1\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$6\r\nx\r\ny\nz\r\n"
    parser = RespParser()
    replies = []
    for i in range(len(wire)):
        parser.feed(wire[i : i + 1])
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(reply)
    assert replies == [b"OK", 3, None, [b"message", b"ch", b"x\r\ny\nz"]]


def test_an_error_reply_is_raised_and_the_next_reply_still_parses() -> None:
    parser = RespParser()
    parser.feed(b"-WRONGPASS invalid username-password pair\r\n+OK\r\n")
    with pytest.raises(RedisReplyError, match="WRONGPASS invalid username-password pair"):
        parser.next_reply()
    assert parser.next_reply() == b"OK"
    assert parser.next_reply() is NEED_DATA


def test_bytes_that_are_not_resp_raise_a_protocol_error() -> None:
    parser = RespParser()
    parser.feed(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(RedisProtocolError, match="Protocol error"):
        parser.next_reply()
