"""RESP, the Redis wire protocol, without I/O: where Redis is, commands out, replies in.

Theory of operation
-------------------
Replication over Redis (issue 14) needs five commands: ``AUTH``, ``SELECT``, ``CLIENT
SETNAME``, ``PUBLISH`` and ``SUBSCRIBE`` (and ``PING`` to see that Redis is still there). A
command goes out as a RESP array of bulk strings (`encode_command`, a few lines); replies are
parsed by hiredis's C reader (`RespParser` wraps ``hiredis.Reader``), which turns ``+OK`` into
``b"OK"``, ``:3`` into ``3``, ``$5\\r\\nhello`` into ``b"hello"``, arrays into lists, and error
replies (``-WRONGPASS ...``) into `RedisReplyError` values, which `RespParser.next_reply`
raises. Bytes that are not RESP raise `RedisProtocolError`; both are `RedisError`, the one
exception callers catch. The connection is RESP2 (no ``HELLO``): a subscribed connection then
gets its messages as ``[b"message", channel, payload]`` arrays.

`parse_redis_url` reads ``redis://[[user]:password@]host[:port][/db]`` into a `RedisAddress`
(config validation calls it, so a bad URL is a `ConfigError` naming the key). A password in the
URL is sent with ``AUTH`` (``AUTH user password`` with a user: Redis 6 ACLs); ``rediss://``
(TLS) is refused, as are query strings, rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote, urlsplit

import attrs
import hiredis

__all__ = [
    "DEFAULT_PORT",
    "NEED_DATA",
    "RedisAddress",
    "RedisConnectionError",
    "RedisError",
    "RedisProtocolError",
    "RedisReplyError",
    "RespParser",
    "encode_command",
    "parse_redis_url",
]

DEFAULT_PORT: Final = 6379


class RedisError(Exception):
    """Talking to Redis failed; the message says how (and never holds the password)."""


class RedisReplyError(RedisError):
    """Redis answered a command with an error reply (``-ERR ...``, ``-WRONGPASS ...``)."""


class RedisProtocolError(RedisError):
    """Redis sent bytes that are not RESP, or a reply of a shape the command never has."""


class RedisConnectionError(RedisError):
    """The connection to Redis could not be made, was closed, or went silent."""


@attrs.frozen
class RedisAddress:
    """Where Redis is and how to log in (from `parse_redis_url`)."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def display(self) -> str:
        """The URL without its password, for logs and errors."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"redis://{user}{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]`` as a `RedisAddress`.

    Raises:
        ValueError: the URL is not of that form; the message says what is wrong (and never
            quotes the password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a redis:// URL ({e})") from None
    if parts.scheme == "rediss":
        raise ValueError("rediss:// (TLS) is not supported; use redis:// on a private network")
    if parts.scheme != "redis":
        raise ValueError(f"must start with redis:// (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise ValueError("no host (e.g. redis://127.0.0.1:6379/0)")
    if port == 0:
        raise ValueError("the port must be between 1 and 65535")
    if parts.query or parts.fragment:
        raise ValueError("query strings and fragments are not supported")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"the database must be a number (/0, /1, ...), not /{path}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and not password:
        raise ValueError("a user needs a password (redis://user:password@host)")
    if password == "":
        raise ValueError("the password is empty (redis://:password@host)")
    return RedisAddress(
        parts.hostname,
        DEFAULT_PORT if port is None else port,
        int(path) if path else 0,
        username,
        password,
    )


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as RESP: an array of bulk strings (str as UTF-8, int in decimal)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""`RespParser.next_reply` has no complete reply yet: feed more bytes."""


class RespParser:
    """Replies from bytes: `feed` what the socket gives, then `next_reply` until `NEED_DATA`."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(
            protocolError=RedisProtocolError,
            replyError=RedisReplyError,
            notEnoughData=NEED_DATA,
        )

    def feed(self, data: bytes) -> None:
        """Add bytes read from Redis."""
        self._reader.feed(data)

    def next_reply(self) -> Any:
        """The next complete reply, or `NEED_DATA`.

        Raises:
            RedisReplyError: the reply is an error reply.
            RedisProtocolError: the bytes are not RESP (the parser is then unusable).
        """
        try:
            reply = self._reader.gets()
        except hiredis.HiredisError as e:  # the reader raises ours; this is a fallback
            raise RedisProtocolError(str(e)) from e
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply
