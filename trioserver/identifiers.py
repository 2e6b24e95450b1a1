"""Matrix identifier grammar (spec appendices, "Identifier Grammar")."""

from __future__ import annotations

import ipaddress
import re

# Appendices, "Server Name": a DNS name, IPv4 literal or bracketed IPv6 literal, then an
# optional port.
_DNS_NAME = re.compile(r"^[A-Za-z0-9.\-]{1,255}$")
_PORT = re.compile(r"^[0-9]{1,5}$")

# Appendices, "User Identifiers": the historical grammar that a new local user must satisfy
# (lower case only; `+` was added by MSC4009).
_NEW_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")

MAX_USER_ID_LENGTH = 255


def is_valid_server_name(name: str) -> bool:
    """Whether `name` is a valid server name, with an optional port."""
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end == -1:
            return False
        host, rest = name[1:end], name[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        if ":" in name:
            host, port = name.rsplit(":", 1)
        if not _DNS_NAME.match(host):
            return False
    return port is None or (_PORT.match(port) is not None and 0 < int(port) < 65536)


def split_user_id(user_id: str) -> tuple[str, str] | None:
    """Split ``@localpart:server`` into its parts, or None when it is not a user id."""
    if len(user_id) > MAX_USER_ID_LENGTH or not user_id.startswith("@") or ":" not in user_id:
        return None
    localpart, server_name = user_id[1:].split(":", 1)
    if not localpart or not is_valid_server_name(server_name):
        return None
    return localpart, server_name


def is_valid_new_localpart(localpart: str) -> bool:
    """Whether a new local user may take this localpart (before the length check)."""
    return bool(_NEW_LOCALPART.match(localpart)) and not localpart.startswith("_")
