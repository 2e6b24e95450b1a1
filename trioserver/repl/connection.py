"""One end of a replication connection, as a state machine over bytes (sans-IO, STYLE S7).

Theory of operation
-------------------
The replication protocol (see ``commands.py``) is one UTF-8 command per ``\\n``-terminated line
between the server (the replication listener on main) and a client (a worker). On connect the
server sends ``POSITION`` for each stream, never a ``RDATA`` backlog of rows written before the
connection (SEED-SPEC seed 3): the client catches up from the database to that token and then
applies live ``RDATA``. This module knows none of that sequence; it only frames lines and checks
who may send what, so that ``repl/server.py`` and ``repl/client.py`` are small trio loops that
move bytes.

Use it like h11: feed what the socket gives to `ReplConnection.receive_data` (``b""`` at EOF),
then call `ReplConnection.next_command` until it returns `NEED_DATA`; write what
`ReplConnection.send` returns. ``next_command`` gives, in order:

- a `Command` for each complete line (``\\n`` ends a line, a ``\\r`` before it is dropped, and
  blank or all-space lines are skipped, as in Synapse);
- `NEED_DATA` when no complete line is buffered and the peer has not closed;
- `CLOSED` once the peer has closed (``receive_data(b"")``) and every line has been returned;
  it keeps returning `CLOSED` after that.

It raises `ReplProtocolError` for a line that does not parse, is not UTF-8, carries a verb the
peer's role may not send, or grows past ``max_line`` bytes (raised as soon as the buffer passes
the limit, without waiting for the newline), and for EOF in the middle of a line. After that the
connection is broken: every later ``next_command`` raises the same error, but ``send`` still
works so that the caller can send ``ERROR`` before closing.

The line limit also bounds what ``send`` produces, and ``max_buffered`` bounds the received
bytes held at once (a caller that drains ``next_command`` between reads never comes near it).
Flow control of outgoing bytes (cutting off a slow consumer) belongs to the I/O loop, which
knows how much is queued.
"""

from __future__ import annotations

import enum
from typing import Final, Literal, NoReturn

from trioserver.repl.commands import (
    CLIENT_SENDS,
    SERVER_SENDS,
    Command,
    ReplProtocolError,
    parse_line,
)

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_LINE",
    "NEED_DATA",
    "Closed",
    "ConnectionSignal",
    "NeedData",
    "ReplConnection",
    "Role",
]

Role = Literal["server", "client"]

DEFAULT_MAX_LINE: Final = 1024 * 1024
"""Longest line, in bytes without its ``\\r\\n`` or ``\\n``, either side accepts or sends."""

DEFAULT_MAX_BUFFERED: Final = 8 * 1024 * 1024
"""Most received-but-unparsed bytes a connection holds."""


class ConnectionSignal(enum.Enum):
    """What `ReplConnection.next_command` returns when it has no command."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = ConnectionSignal.NEED_DATA
"""No complete line is buffered: call ``receive_data`` with more bytes."""

CLOSED: Final = ConnectionSignal.CLOSED
"""The peer closed the connection and every line it sent has been returned."""

NeedData = Literal[ConnectionSignal.NEED_DATA]
Closed = Literal[ConnectionSignal.CLOSED]

_SENDS: Final[dict[Role, frozenset[str]]] = {"server": SERVER_SENDS, "client": CLIENT_SENDS}
_PEER: Final[dict[Role, Role]] = {"server": "client", "client": "server"}


class ReplConnection:
    """Framing and direction rules for one end (``role``) of a replication connection."""

    def __init__(
        self,
        role: Role,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        if role not in _SENDS:
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if max_line < 1:
            raise ValueError(f"max_line must be positive, not {max_line}")
        if max_buffered < max_line + 2:
            raise ValueError(
                f"max_buffered ({max_buffered}) must hold at least one whole line "
                f"(max_line + 2 = {max_line + 2})"
            )
        self.role: Final = role
        self.peer_role: Final = _PEER[role]
        self.max_line: Final = max_line
        self.max_buffered: Final = max_buffered
        self._buffer = bytearray()
        # Where to resume looking for b"\n": everything before it has been searched already.
        self._scanned = 0
        self._eof = False
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as commands."""
        return len(self._buffer)

    @property
    def peer_closed(self) -> bool:
        """Whether ``receive_data(b"")`` has been called."""
        return self._eof

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed its side.

        Raises `ReplProtocolError` if the unparsed bytes would pass ``max_buffered``, and
        `RuntimeError` for data after EOF.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data called with data after EOF")
        if len(self._buffer) + len(data) > self.max_buffered:
            self._fail(
                f"more than {self.max_buffered} bytes received and not yet read as commands"
            )
        self._buffer += data

    def next_command(self) -> Command | NeedData | Closed:
        """The next command from the peer, or `NEED_DATA`, or `CLOSED` (see the module doc)."""
        if self._error is not None:
            raise ReplProtocolError(self._error)
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline < 0:
                self._scanned = len(self._buffer)
                self._check_partial_line()
                if not self._eof:
                    return NEED_DATA
                if self._buffer:
                    self._fail(
                        f"connection closed in the middle of a line ({len(self._buffer)} bytes)"
                    )
                return CLOSED
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            self._scanned = 0
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self.max_line:
                self._fail(self._too_long(len(raw)))
            command = self._parse(raw)
            if command is not None:
                return command

    def send(self, command: Command) -> bytes:
        """The bytes to write for ``command``: its line, ``\\n``-terminated, in UTF-8.

        Raises `ReplProtocolError` if this role may not send that verb or the line is longer
        than ``max_line``.
        """
        if command.NAME not in _SENDS[self.role]:
            raise ReplProtocolError(f"the {self.role} may not send {command.NAME}")
        line = command.to_line().encode()
        if len(line) > self.max_line:
            raise ReplProtocolError(
                f"{command.NAME} line of {len(line)} bytes is longer than the limit of "
                f"{self.max_line}"
            )
        return line + b"\n"

    def _parse(self, raw: bytes) -> Command | None:
        try:
            line = raw.decode()
        except UnicodeDecodeError as e:
            self._fail(f"line is not valid UTF-8 ({e.reason} at byte {e.start})")
        if not line.strip(" "):
            return None
        try:
            command = parse_line(line)
        except ReplProtocolError as e:
            self._fail(str(e))
        if command.NAME not in _SENDS[self.peer_role]:
            self._fail(f"invalid command: {command.NAME} (the {self.peer_role} may not send it)")
        return command

    def _check_partial_line(self) -> None:
        # A pending line may end in the b"\r" of a b"\r\n" that has not fully arrived.
        pending = len(self._buffer)
        if self._buffer.endswith(b"\r"):
            pending -= 1
        if pending > self.max_line:
            self._fail(self._too_long(pending, partial=True))

    def _too_long(self, length: int, *, partial: bool = False) -> str:
        so_far = " so far, without a newline" if partial else ""
        return f"line of {length} bytes{so_far} is longer than the limit of {self.max_line}"

    def _fail(self, message: str) -> NoReturn:
        self._error = message
        raise ReplProtocolError(message)
