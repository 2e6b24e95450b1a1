"""Parsers and validators for Matrix identifiers (Appendices, "Identifier Grammar").

Theory of operation:
    The specification has two grammars for user IDs.  The *current* grammar
    (``is_valid_user_id``) restricts localparts to ``a-z 0-9 . _ = - / +`` and
    is what a server must use when it *creates* user IDs.  The *historical*
    grammar (``historical=True``) accepts any non-surrogate code point except
    ``:`` and NUL, including an empty localpart; servers "MUST accept" such IDs
    in events received over federation, so everything that judges events
    (auth rules, PDU validation) uses the historical grammar.  Rejecting an
    event another server accepts would split the room, so these checks are
    never stricter than the specification.

    Every identifier is at most 255 bytes of UTF-8.  Server names follow the
    "Server Name" grammar: ``hostname [":" port]`` where hostname is a dotted
    IPv4 literal, a bracketed IPv6 literal or a DNS name.  Ports are "1*5DIGIT"
    as the grammar says (the 0-65535 range is not checked: that is a
    connection concern, not an identifier one).  A dotted quad of digits must
    be a real IPv4 address (octets <= 255), as the text below the grammar
    requires, even though it would also match the DNS name rule.
"""

from __future__ import annotations

import ipaddress
import re

from trioserver.events.constants import MAX_ID_BYTES
from trioserver.events.errors import InvalidIdentifierError
from trioserver.events.room_versions import EventIdFormat, RoomVersion

_PORT = r"[0-9]{1,5}"
_DNS_NAME = re.compile(r"[0-9A-Za-z.\-]{1,255}\Z")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")
_PORT_SUFFIX = re.compile(rf"(.*):({_PORT})\Z", re.DOTALL)
_USER_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+\Z")
# A SHA-256 digest is 32 bytes: 43 characters of unpadded base64.
_STD_B64_HASH = re.compile(r"[A-Za-z0-9+/]{43}\Z")
_URL_B64_HASH = re.compile(r"[A-Za-z0-9\-_]{43}\Z")


def _byte_length(value: str) -> int:
    # surrogatepass: lone surrogates are rejected separately, but must not crash here.
    return len(value.encode("utf-8", "surrogatepass"))


def _is_opaque_localpart(localpart: str) -> bool:
    """Room/alias/historical user localpart: no ``:``, NUL or surrogates."""
    return not any(ch in ":\x00" or "\ud800" <= ch <= "\udfff" for ch in localpart)


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split a server name into host and optional port, validating the grammar.

    Args:
        server_name: e.g. ``matrix.org``, ``1.2.3.4:8448``, ``[::1]:8448``.

    Returns:
        ``(host, port)``; ``host`` keeps the brackets of an IPv6 literal.

    Raises:
        InvalidIdentifierError: If the string is not a valid server name.
    """
    host, port = server_name, None
    match = _PORT_SUFFIX.match(server_name)
    # A bare IPv6 literal ends with "]", so a ":digits" suffix is always a port.
    if match is not None:
        host, port = match.group(1), int(match.group(2))
    if not _is_valid_host(host):
        raise InvalidIdentifierError(f"invalid server name {server_name!r}")
    return host, port


def _is_valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]") or not _IPV6_CHARS.match(host[1:-1]):
            return False
        # RFC 3513 section 2.2 text forms; the character set excludes zone IDs.
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    ipv4 = _IPV4.match(host)
    if ipv4 is not None:
        # "IPv4 literals must be a sequence of four decimal numbers in the range 0 to 255".
        return all(int(octet) <= 255 for octet in ipv4.groups())
    return _DNS_NAME.match(host) is not None


def is_valid_server_name(server_name: str) -> bool:
    """Whether ``server_name`` matches the "Server Name" grammar.

    Args:
        server_name: The candidate server name.

    Returns:
        True if valid.
    """
    try:
        parse_server_name(server_name)
    except InvalidIdentifierError:
        return False
    return True


def _split_sigil_id(identifier: str, sigil: str) -> tuple[str, str]:
    if not identifier.startswith(sigil):
        raise InvalidIdentifierError(f"{identifier!r} does not start with {sigil!r}")
    localpart, sep, domain = identifier[1:].partition(":")
    if not sep:
        raise InvalidIdentifierError(f"{identifier!r} has no ':' before the server name")
    if _byte_length(identifier) > MAX_ID_BYTES:
        raise InvalidIdentifierError(f"{identifier!r} is longer than {MAX_ID_BYTES} bytes")
    parse_server_name(domain)
    return localpart, domain


def parse_user_id(user_id: str, *, historical: bool = False) -> tuple[str, str]:
    """Parse a user ID into ``(localpart, server_name)``.

    Args:
        user_id: e.g. ``@alice:example.org``.
        historical: Accept the historical localpart grammar (any non-surrogate
            code point except ``:`` and NUL, possibly empty), as servers must
            for IDs found in events.  The default is the current grammar, for
            IDs this server creates.

    Returns:
        The localpart and the server name.

    Raises:
        InvalidIdentifierError: If the user ID is malformed.
    """
    localpart, domain = _split_sigil_id(user_id, "@")
    if historical:
        valid = _is_opaque_localpart(localpart)
    else:
        valid = _USER_LOCALPART.match(localpart) is not None
    if not valid:
        raise InvalidIdentifierError(f"invalid user ID localpart in {user_id!r}")
    return localpart, domain


def is_valid_user_id(user_id: object, *, historical: bool = False) -> bool:
    """Whether ``user_id`` is a valid user ID string (see :func:`parse_user_id`).

    Args:
        user_id: The candidate value (any JSON value is accepted).
        historical: Accept the historical localpart grammar.

    Returns:
        True if valid.
    """
    if not isinstance(user_id, str):
        return False
    try:
        parse_user_id(user_id, historical=historical)
    except InvalidIdentifierError:
        return False
    return True


def is_valid_room_alias(alias: object) -> bool:
    """Whether ``alias`` is a valid ``#localpart:server_name`` room alias.

    Args:
        alias: The candidate value.

    Returns:
        True if valid.
    """
    if not isinstance(alias, str):
        return False
    try:
        localpart, _ = _split_sigil_id(alias, "#")
    except InvalidIdentifierError:
        return False
    return _is_opaque_localpart(localpart)


def is_valid_room_id(room_id: object, room_version: RoomVersion | None = None) -> bool:
    """Whether ``room_id`` is a valid room ID.

    Room versions 1-11 use ``!opaque:server_name``; version 12 uses ``!`` and
    the URL-safe base64 reference hash of the create event.

    Args:
        room_id: The candidate value.
        room_version: Check the form this version requires; ``None`` accepts either.

    Returns:
        True if valid.
    """
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return False
    hashed = _URL_B64_HASH.match(room_id[1:]) is not None
    if room_version is not None and room_version.room_id_from_create_event:
        return hashed
    if room_version is None and hashed:
        return True
    try:
        localpart, _ = _split_sigil_id(room_id, "!")
    except InvalidIdentifierError:
        return False
    return _is_opaque_localpart(localpart)


def is_valid_event_id(event_id: object, room_version: RoomVersion | None = None) -> bool:
    """Whether ``event_id`` is a valid event ID.

    Args:
        event_id: The candidate value.
        room_version: Check the form this version requires (``$opaque:server``
            for v1/v2, ``$`` + base64 hash for v3+); ``None`` accepts any form.

    Returns:
        True if valid.
    """
    if not isinstance(event_id, str) or not event_id.startswith("$"):
        return False
    if _byte_length(event_id) > MAX_ID_BYTES:
        return False
    fmt = room_version.event_id_format if room_version is not None else None
    if fmt is EventIdFormat.V3_BASE64:
        return _STD_B64_HASH.match(event_id[1:]) is not None
    if fmt is EventIdFormat.V4_URL_SAFE_BASE64:
        return _URL_B64_HASH.match(event_id[1:]) is not None
    if fmt is EventIdFormat.V1_OPAQUE:
        try:
            localpart, _ = _split_sigil_id(event_id, "$")
        except InvalidIdentifierError:
            return False
        return _is_opaque_localpart(localpart)
    return len(event_id) > 1 and _is_opaque_localpart(event_id[1:].split(":", 1)[0])


def get_server_name(identifier: str) -> str:
    """Return the server name of a ``&localpart:server_name`` identifier.

    Args:
        identifier: A user ID, alias, room ID or event ID with a domain.

    Returns:
        The server name after the first ``:``.

    Raises:
        InvalidIdentifierError: If there is no ``:``.
    """
    _, sep, domain = identifier.partition(":")
    if not sep:
        raise InvalidIdentifierError(f"{identifier!r} has no server name")
    return domain
