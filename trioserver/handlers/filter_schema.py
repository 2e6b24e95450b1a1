"""Validation of sync filters (client-server API, "Filtering").

The schema is data: each filter kind maps its keys to a checker. A filter that breaks it is
refused with 400 ``M_BAD_JSON`` naming the offending key path, as Synapse does; unknown keys are
allowed (clients send extensions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trioserver.errors import MatrixError
from trioserver.events.identifiers import is_valid_room_id, is_valid_user_id

Checker = Callable[[Any, str], None]


def _fail(path: str, what: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", f"Invalid filter: '{path}' must be {what}")


def _string_list(value: Any, path: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, "an array of strings")


def _user_ids(value: Any, path: str) -> None:
    # Spec "Filtering": `senders`/`not_senders` list user ids (Synapse refuses anything else).
    _string_list(value, path)
    if not all(is_valid_user_id(v, historical=True) for v in value):
        raise _fail(path, "an array of user ids")


def _room_ids(value: Any, path: str) -> None:
    _string_list(value, path)
    if not all(is_valid_room_id(v) for v in value):
        raise _fail(path, "an array of room ids")


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "a boolean")


def _positive_int(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, "a non-negative integer")


def _one_of(*choices: str) -> Checker:
    def check(value: Any, path: str) -> None:
        if value not in choices:
            raise _fail(path, "one of " + ", ".join(repr(c) for c in choices))

    return check


def _object(schema: dict[str, Checker]) -> Checker:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "an object")
        for key, checker in schema.items():
            if key in value and value[key] is not None:
                checker(value[key], f"{path}.{key}" if path else key)

    return check


_EVENT_FILTER: dict[str, Checker] = {
    "limit": _positive_int,
    "senders": _user_ids,
    "not_senders": _user_ids,
    "types": _string_list,
    "not_types": _string_list,
}
_ROOM_EVENT_FILTER: dict[str, Checker] = {
    **_EVENT_FILTER,
    "rooms": _room_ids,
    "not_rooms": _room_ids,
    "contains_url": _boolean,
    "lazy_load_members": _boolean,
    "include_redundant_members": _boolean,
    "unread_thread_notifications": _boolean,
}
_ROOM_FILTER: dict[str, Checker] = {
    "rooms": _room_ids,
    "not_rooms": _room_ids,
    "include_leave": _boolean,
    "timeline": _object(_ROOM_EVENT_FILTER),
    "state": _object(_ROOM_EVENT_FILTER),
    "ephemeral": _object(_ROOM_EVENT_FILTER),
    "account_data": _object(_ROOM_EVENT_FILTER),
}
_check_filter = _object(
    {
        "event_fields": _string_list,
        "event_format": _one_of("client", "federation"),
        "presence": _object(_EVENT_FILTER),
        "account_data": _object(_EVENT_FILTER),
        "room": _object(_ROOM_FILTER),
    }
)


def validate_filter(body: Any) -> None:
    """Check a filter definition.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` naming the first bad key.
    """
    _check_filter(body, "")
