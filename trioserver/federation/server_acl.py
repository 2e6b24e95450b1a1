"""Server ACLs (``m.room.server_acl``, Client-Server API "Server Access Control Lists").

A server whose name an ACL denies may not send events into the room or make requests about
it. Pure: the caller passes the ACL event's content.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import parse_server_name

if TYPE_CHECKING:
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateStore

ACL_KEY = ("m.room.server_acl", "")

if TYPE_CHECKING:
    from collections.abc import Mapping


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    # `*` any run of characters, `?` one character; case-insensitive, like server names.
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body + r"\Z", re.IGNORECASE)


def _patterns(content: Mapping[str, Any], key: str) -> list[str]:
    value = content.get(key, [])
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str)]


def _is_ip_literal(host: str) -> bool:
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def server_allowed(content: Mapping[str, Any], server_name: str) -> bool:
    """Whether the ACL with `content` lets `server_name` take part in the room.

    The port is not part of the match; a deny match wins over an allow match; an IP-literal
    server is denied unless ``allow_ip_literals`` is true (its default).
    """
    try:
        host, _port = parse_server_name(server_name)
    except Exception:  # not a server name at all: never allowed
        return False
    allow_ip = content.get("allow_ip_literals", True)
    if allow_ip is False and _is_ip_literal(host):
        return False
    if any(_glob(p).match(host) for p in _patterns(content, "deny")):
        return False
    return any(_glob(p).match(host) for p in _patterns(content, "allow"))


async def check_room_acl(
    state: StateStore, events: EventStore, room_id: str, server_name: str
) -> None:
    """Refuse (403) a server the room's current ``m.room.server_acl`` denies."""
    current = await state.current_state_entries(room_id, [ACL_KEY])
    acl_id = current.get(ACL_KEY)
    if acl_id is None:
        return
    acl = await events.get_event(acl_id)
    if acl is not None and not server_allowed(acl.event.content, server_name):
        raise MatrixError("M_FORBIDDEN", f"Server {server_name} is banned by the room's ACL")
