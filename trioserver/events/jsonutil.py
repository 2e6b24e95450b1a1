"""Small helpers for parsed JSON values.

Events are plain JSON dictionaries; these helpers keep the rest of the package
honest about the difference between "a value we parsed from the network" (typed
``Any``) and the concrete types the protocol requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: A parsed JSON object.
JsonDict = dict[str, Any]
#: ``(event type, state key)``: the key of a room state map.
StateKey = tuple[str, str]


def copy_json(value: Any) -> Any:
    """Return a deep copy of a parsed JSON value.

    Only ``dict``/``list`` (and read-only ``Mapping``/``tuple``) containers are
    copied; scalars are immutable and shared.

    Args:
        value: A value made of JSON-compatible Python objects.

    Returns:
        An independent copy made of ``dict``, ``list`` and scalars.
    """
    if isinstance(value, Mapping):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [copy_json(item) for item in value]
    return value


def is_json_int(value: object) -> bool:
    """Whether ``value`` is a JSON integer (``bool`` is not, although Python says so)."""
    return type(value) is int


def domain_of(identifier: str) -> str | None:
    """Return the part of a ``&localpart:domain`` identifier after the first ``:``.

    Localparts cannot contain ``:`` (Appendices, "Identifier Grammar"), so the
    first colon always separates the domain, even when the domain has a port.

    Args:
        identifier: A user ID, room ID with a domain, alias or v1/v2 event ID.

    Returns:
        The domain (server name), or ``None`` if there is no colon.
    """
    _, sep, domain = identifier.partition(":")
    return domain if sep else None
