"""The replication wire commands: one frozen class per verb, parsed from and rendered to a line.

Theory of operation
-------------------
Replication is a line protocol over one TCP connection between the replication listener (the
*server*, on main) and each worker (the *client*). Every line is ``VERB`` or ``VERB <args>``:
the verb is the text before the first space, and each class here parses the rest
(``from_line``) and renders the whole line back (``to_line``, no newline). Framing, the line
limit and which side may send which verb live in ``connection.py``; nothing here does I/O.

The handshake (SEED-SPEC seed 3, as in Synapse since v1.13): the server sends ``SERVER`` and
``PING``; the client sends ``NAME``, ``AUTH`` (ours: Synapse's TCP replication had no
authentication, which is why it was only ever meant for a private network), ``PING`` and
``REPLICATE``; the server answers with one
``POSITION`` per stream and from then on sends every new row as ``RDATA``. It never replays rows
written before the connection as ``RDATA``: a backlog would have to be held per connection and
would race with live rows. The client instead catches up from the shared database (or from the
writer, for in-memory streams) up to the announced token, in pages, and then applies ``RDATA``.
``POSITION <stream> <instance> <prev> <new>`` (Synapse's form since v1.22) also says that the
instance wrote no rows between ``prev`` and ``new``, so a client already inside that range has
nothing to fetch.

``RDATA <stream> <instance> <token|batch> <json>`` carries one row; ``batch`` (``token=None``)
means another row with the same token follows, and only the last line of a group carries the
token. The row is any JSON value here; the streams layer structures it (rows there are frozen
attrs classes sent as named-field JSON objects, STYLE S8).

There is no cache-invalidation verb: cache invalidations travel as rows of a ``caches`` stream
in ``RDATA`` (Synapse dropped its ``INVALIDATE_CACHE`` verb in v1.14 for the same reason), so they
get tokens and are recovered by the same catch-up as every other stream.

Every class validates its fields when constructed, so ``to_line()`` always gives a line that
``parse_line`` accepts, and ``parse_line(c.to_line()) == c``.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CLIENT_SENDS",
    "COMMANDS",
    "SERVER_SENDS",
    "AuthCommand",
    "Command",
    "ErrorCommand",
    "NameCommand",
    "PingCommand",
    "PositionCommand",
    "RdataCommand",
    "ReplProtocolError",
    "ReplicateCommand",
    "ServerCommand",
    "parse_line",
]

BATCH = "batch"
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_NON_NEGATIVE_INTEGER = re.compile(r"[0-9]+", re.ASCII)


class ReplProtocolError(ValueError):
    """A line, or a sequence of bytes, that breaks the replication protocol.

    The message says what was wrong and is fit to send to the peer in an ``ERROR`` line.
    """


def _check_name(what: str, value: str) -> str:
    """A stream, instance or server name: one word of printable characters."""
    if not value:
        raise ReplProtocolError(f"{what} is empty")
    for char in value:
        if char.isspace() or not char.isprintable():
            raise ReplProtocolError(
                f"{what} {value!r} contains a space or control character {char!r}"
            )
    return value


def _parse_int(what: str, text: str, *, signed: bool = True) -> int:
    pattern = _INTEGER if signed else _NON_NEGATIVE_INTEGER
    if not pattern.fullmatch(text):
        kind = "an integer" if signed else "a non-negative integer"
        raise ReplProtocolError(f"{what} is not {kind}: {text[:40]!r}")
    return int(text)


def _split(args: str, names: tuple[str, ...], *, last_takes_rest: bool = False) -> list[str]:
    """Split ``args`` at single spaces into exactly ``len(names)`` fields.

    With ``last_takes_rest`` the last field is everything after the others (RDATA's JSON).
    """
    parts = args.split(" ", len(names) - 1) if args else []
    if len(parts) < len(names):
        missing = ", ".join(names[len(parts) :])
        raise ReplProtocolError(f"missing argument(s): {missing}")
    if not last_takes_rest and " " in parts[-1]:
        raise ReplProtocolError(f"too many arguments, expected: {' '.join(names)}")
    return parts


def _name_validator(what: str) -> Any:
    def validate(_instance: object, _attribute: object, value: str) -> None:
        _check_name(what, value)

    return validate


@attrs.frozen
class ServerCommand:
    """``SERVER <server_name>``: the server's first line; the client checks the name."""

    NAME: ClassVar[str] = "SERVER"

    server_name: str = attrs.field(validator=_name_validator("server name"))

    @classmethod
    def from_line(cls, args: str) -> Self:
        (server_name,) = _split(args, ("server_name",))
        return cls(server_name)

    def to_line(self) -> str:
        return f"{self.NAME} {self.server_name}"


@attrs.frozen
class NameCommand:
    """``NAME <instance_name>``: the client says which instance it is."""

    NAME: ClassVar[str] = "NAME"

    instance_name: str = attrs.field(validator=_name_validator("instance name"))

    @classmethod
    def from_line(cls, args: str) -> Self:
        (instance_name,) = _split(args, ("instance_name",))
        return cls(instance_name)

    def to_line(self) -> str:
        return f"{self.NAME} {self.instance_name}"


@attrs.frozen
class AuthCommand:
    """``AUTH <secret>``: the client proves it knows ``[replication] secret``.

    The secret is everything after the first space (it may contain spaces). It never appears in
    a repr or an error message, since both end up in logs.
    """

    NAME: ClassVar[str] = "AUTH"

    secret: str = attrs.field(repr=False)

    @secret.validator
    def _check_secret(self, _attribute: object, value: str) -> None:
        if not value:
            raise ReplProtocolError("the secret is empty")
        if "\n" in value or "\r" in value:
            raise ReplProtocolError("the secret contains a line break")

    @classmethod
    def from_line(cls, args: str) -> Self:
        return cls(args)

    def to_line(self) -> str:
        return f"{self.NAME} {self.secret}"


@attrs.frozen
class PingCommand:
    """``PING <ms>``: keepalive, both ways; the sender's clock in milliseconds."""

    NAME: ClassVar[str] = "PING"

    timestamp_ms: int = attrs.field()

    @timestamp_ms.validator
    def _check_timestamp(self, _attribute: object, value: int) -> None:
        if value < 0:
            raise ReplProtocolError(f"timestamp is negative: {value}")

    @classmethod
    def from_line(cls, args: str) -> Self:
        (timestamp,) = _split(args, ("timestamp_ms",))
        return cls(_parse_int("timestamp", timestamp, signed=False))

    def to_line(self) -> str:
        return f"{self.NAME} {self.timestamp_ms}"


@attrs.frozen
class ReplicateCommand:
    """``REPLICATE``: the client asks for the current position of every stream.

    Synapse sends it as ``"REPLICATE "`` with a trailing space; trailing spaces are accepted.
    Arguments (the pre-v1.13 ``REPLICATE <stream> <token>`` form) are refused.
    """

    NAME: ClassVar[str] = "REPLICATE"

    @classmethod
    def from_line(cls, args: str) -> Self:
        if args.strip(" "):
            raise ReplProtocolError(
                f"takes no arguments (got {args[:40]!r}); "
                "the per-stream form of Synapse before v1.13 is not supported"
            )
        return cls()

    def to_line(self) -> str:
        return self.NAME


@attrs.frozen
class PositionCommand:
    """``POSITION <stream> <instance> <prev_token> <new_token>``.

    ``instance``'s part of ``stream`` is at ``new_token``, and it wrote nothing after
    ``prev_token`` up to ``new_token``; so ``prev_token <= new_token``.
    """

    NAME: ClassVar[str] = "POSITION"

    stream_name: str = attrs.field(validator=_name_validator("stream name"))
    instance_name: str = attrs.field(validator=_name_validator("instance name"))
    prev_token: int
    new_token: int = attrs.field()

    @new_token.validator
    def _check_order(self, _attribute: object, value: int) -> None:
        if self.prev_token > value:
            raise ReplProtocolError(f"prev_token {self.prev_token} is after new_token {value}")

    @classmethod
    def from_line(cls, args: str) -> Self:
        stream, instance, prev, new = _split(
            args, ("stream_name", "instance_name", "prev_token", "new_token")
        )
        return cls(
            stream,
            instance,
            _parse_int("prev_token", prev),
            _parse_int("new_token", new),
        )

    def to_line(self) -> str:
        return (
            f"{self.NAME} {self.stream_name} {self.instance_name} "
            f"{self.prev_token} {self.new_token}"
        )


@attrs.frozen
class RdataCommand:
    """``RDATA <stream> <instance> <token|batch> <json>``: one row of a stream.

    ``token is None`` is written ``batch``: more rows with the same token follow, and the last
    of them carries it. ``row`` is the decoded JSON value (orjson).
    """

    NAME: ClassVar[str] = "RDATA"

    stream_name: str = attrs.field(validator=_name_validator("stream name"))
    instance_name: str = attrs.field(validator=_name_validator("instance name"))
    token: int | None
    row: Any

    @classmethod
    def from_line(cls, args: str) -> Self:
        stream, instance, token, row_json = _split(
            args, ("stream_name", "instance_name", "token", "json"), last_takes_rest=True
        )
        try:
            row = orjson.loads(row_json)
        except orjson.JSONDecodeError as e:
            raise ReplProtocolError(f"the row is not valid JSON: {e}") from e
        parsed_token = None if token == BATCH else _parse_int("token", token)
        return cls(stream, instance, parsed_token, row)

    def to_line(self) -> str:
        token = BATCH if self.token is None else str(self.token)
        row = orjson.dumps(self.row).decode()
        return f"{self.NAME} {self.stream_name} {self.instance_name} {token} {row}"


@attrs.frozen
class ErrorCommand:
    """``ERROR <message>``: either side reports an error, usually just before it closes."""

    NAME: ClassVar[str] = "ERROR"

    message: str = attrs.field()

    @message.validator
    def _check_message(self, _attribute: object, value: str) -> None:
        if "\n" in value or "\r" in value:
            raise ReplProtocolError(f"the message contains a line break: {value[:40]!r}")

    @classmethod
    def from_line(cls, args: str) -> Self:
        return cls(args)

    def to_line(self) -> str:
        return f"{self.NAME} {self.message}" if self.message else self.NAME


Command = (
    ServerCommand
    | NameCommand
    | AuthCommand
    | PingCommand
    | ReplicateCommand
    | PositionCommand
    | RdataCommand
    | ErrorCommand
)
"""Any replication command; ``match`` on it (STYLE S8)."""

COMMANDS: Mapping[str, type[Command]] = {
    cls.NAME: cls
    for cls in (
        ServerCommand,
        NameCommand,
        AuthCommand,
        PingCommand,
        ReplicateCommand,
        PositionCommand,
        RdataCommand,
        ErrorCommand,
    )
}
"""Each verb to its class."""

SERVER_SENDS: frozenset[str] = frozenset(
    {
        ServerCommand.NAME,
        PositionCommand.NAME,
        RdataCommand.NAME,
        PingCommand.NAME,
        ErrorCommand.NAME,
    }
)
"""Verbs the replication server (main) may send."""

CLIENT_SENDS: frozenset[str] = frozenset(
    {
        NameCommand.NAME,
        AuthCommand.NAME,
        ReplicateCommand.NAME,
        PingCommand.NAME,
        ErrorCommand.NAME,
    }
)
"""Verbs a replication client (a worker) may send."""


def parse_line(line: str) -> Command:
    """Parse one line, without its line ending, into a command.

    Raises `ReplProtocolError` for an empty line, an unknown verb or bad arguments.
    """
    verb, _, args = line.partition(" ")
    if not verb:
        raise ReplProtocolError(f"no command at the start of the line: {line[:80]!r}")
    cls = COMMANDS.get(verb)
    if cls is None:
        raise ReplProtocolError(f"unknown command {verb[:80]!r}")
    try:
        return cls.from_line(args)
    except ReplProtocolError as e:
        # An AUTH line is the secret: never quote it back to the peer or into a log.
        quoted = verb if cls is AuthCommand else line[:100]
        raise ReplProtocolError(f"bad {verb} line ({e}): {quoted!r}") from e


def wall_clock_ms() -> int:
    """Wall-clock milliseconds, what PING carries."""
    return int(time.time() * 1000)
