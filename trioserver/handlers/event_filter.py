"""Event filters (client-server API, "Filtering"): parsing and applying them.

A filter arrives as JSON: inline (``/messages?filter={...}``, ``/sync?filter={...}``) or by the id
of one the user uploaded (`FilterStore`). Parsing checks the shape once and builds frozen
objects; applying them is then pure and cheap: type patterns are compiled to one regex per
list, shared by every filter with the same list.

Rules (spec ``EventFilter`` / ``RoomEventFilter``): a missing list means "no restriction", an
empty list matches nothing; the ``not_`` lists win over the positive ones; ``*`` in a type
matches any sequence of characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs
import orjson

from trioserver.errors import MatrixError
from trioserver.handlers.filter_schema import validate_filter

if TYPE_CHECKING:
    from trioserver.events import Event
    from trioserver.stores.filters import FilterStore

EventFormat = Literal["client", "federation"]
T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def _type_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = ("|".join(".*".join(map(re.escape, p.split("*"))) for p in patterns)) or "(?!)"
    return re.compile(f"(?:{alternatives})\\Z", re.DOTALL)


def _matches_type(patterns: tuple[str, ...], event_type: str) -> bool:
    if all("*" not in p for p in patterns):
        return event_type in patterns
    return _type_regex(patterns).match(event_type) is not None


@attrs.frozen
class EventFilter:
    """Spec ``EventFilter``: which events, by type and sender, and how many."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()

    def matches(self, event: Event) -> bool:
        """Whether the event passes the type and sender rules."""
        return self._matches_fields(event.type, event.sender)

    def _matches_fields(self, event_type: str, sender: str) -> bool:
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if self.not_types and _matches_type(self.not_types, event_type):
            return False
        return self.types is None or _matches_type(self.types, event_type)

    def matches_type(self, event_type: str) -> bool:
        """Whether the type rules alone let events of `event_type` through."""
        if self.not_types and _matches_type(self.not_types, event_type):
            return False
        return self.types is None or _matches_type(self.types, event_type)

    def filter(self, events: Iterable[T], key: Callable[[T], Event]) -> list[T]:
        """The items whose event (``key(item)``) matches, in order."""
        return [item for item in events if self.matches(key(item))]

    def filter_json(self, events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Non-room events in JSON (presence, account data, ephemeral), filtered and limited.

        Events without a sender (account data, typing) face the type rules only.
        """
        kept = [e for e in events if self._matches_json(e)]
        return kept if self.limit is None else kept[: self.limit]

    def _matches_json(self, event: Mapping[str, Any]) -> bool:
        event_type = str(event.get("type", ""))
        sender = event.get("sender")
        if isinstance(sender, str):
            return self._matches_fields(event_type, sender)
        if self.not_types and _matches_type(self.not_types, event_type):
            return False
        return self.types is None or _matches_type(self.types, event_type)


@attrs.frozen
class RoomEventFilter(EventFilter):
    """Spec ``RoomEventFilter``: an `EventFilter` plus rooms, URLs and lazy-loaded members."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    # /sync: report each thread's notification counts apart (spec "Receiving notifications").
    unread_thread_notifications: bool = False
    # Most filters (every default one) rule nothing out; /sync asks thousands of times.
    _passes_all: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        passes_all = (
            self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
            and self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
        )
        object.__setattr__(self, "_passes_all", passes_all)

    def matches(self, event: Event) -> bool:
        """Whether the event passes every rule of the filter."""
        if self._passes_all:
            return True
        if not self.matches_room(event.room_id):
            return False
        # Synapse counts only a string ``url``; so do we.
        has_url = isinstance(event.content.get("url"), str)
        if self.contains_url is not None and has_url != self.contains_url:
            return False
        return self._matches_fields(event.type, event.sender)

    def matches_room(self, room_id: str) -> bool:
        """Whether events of this room may pass at all."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@attrs.frozen
class RoomFilter:
    """Spec ``RoomFilter`` (used by /sync)."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: RoomEventFilter = RoomEventFilter()
    state: RoomEventFilter = RoomEventFilter()
    ephemeral: RoomEventFilter = RoomEventFilter()
    account_data: RoomEventFilter = RoomEventFilter()

    def matches_room(self, room_id: str) -> bool:
        """Whether the room is included at all."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@attrs.frozen
class FilterDefinition:
    """A whole filter (spec ``Filter``), as uploaded to ``/user/{userId}/filter``."""

    event_fields: tuple[str, ...] | None = None
    event_format: EventFormat = "client"
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    room: RoomFilter = RoomFilter()


# -- Parsing ----------------------------------------------------------------------------


def _bad(path: str, what: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", f"Invalid filter: '{path}' must be {what}")


def _object(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _bad(path or "filter", "an object")
    return raw


def _strings(body: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(_join(path, key), "an array of strings")
    return tuple(value)


def _bool(body: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(_join(path, key), "a boolean")
    return value


def _limit(body: Mapping[str, Any], path: str) -> int | None:
    value = body.get("limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(_join(path, "limit"), "a non-negative integer")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _event_filter_fields(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {
        "limit": _limit(body, path),
        "types": _strings(body, "types", path),
        "not_types": _strings(body, "not_types", path) or (),
        "senders": _strings(body, "senders", path),
        "not_senders": _strings(body, "not_senders", path) or (),
    }


def parse_event_filter(raw: Any, path: str = "") -> EventFilter:
    """An `EventFilter` from JSON (None gives the empty filter).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` naming the first bad key.
    """
    return EventFilter(**_event_filter_fields(_object(raw, path), path))


def parse_room_event_filter(raw: Any, path: str = "") -> RoomEventFilter:
    """A `RoomEventFilter` from JSON (None gives the empty filter).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` naming the first bad key.
    """
    body = _object(raw, path)
    return RoomEventFilter(
        **_event_filter_fields(body, path),
        rooms=_strings(body, "rooms", path),
        not_rooms=_strings(body, "not_rooms", path) or (),
        contains_url=_bool(body, "contains_url", path),
        lazy_load_members=bool(_bool(body, "lazy_load_members", path)),
        include_redundant_members=bool(_bool(body, "include_redundant_members", path)),
        unread_thread_notifications=bool(_bool(body, "unread_thread_notifications", path)),
    )


def _parse_room_filter(raw: Any, path: str) -> RoomFilter:
    body = _object(raw, path)
    return RoomFilter(
        rooms=_strings(body, "rooms", path),
        not_rooms=_strings(body, "not_rooms", path) or (),
        include_leave=bool(_bool(body, "include_leave", path)),
        **{
            part: parse_room_event_filter(body.get(part), _join(path, part))
            for part in ("timeline", "state", "ephemeral", "account_data")
        },
    )


def parse_event_format(body: Mapping[str, Any]) -> tuple[EventFormat, tuple[str, ...] | None]:
    """The ``event_format`` and ``event_fields`` of a filter.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` when either is malformed.
    """
    event_format = body.get("event_format", "client")
    if event_format not in ("client", "federation"):
        raise _bad("event_format", "'client' or 'federation'")
    fields = _strings(body, "event_fields", "")
    return ("federation" if event_format == "federation" else "client"), fields


def parse_filter_definition(raw: Any) -> FilterDefinition:
    """A whole filter (``/sync``) from JSON.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` naming the first bad key.
    """
    body = _object(raw, "")
    event_format, event_fields = parse_event_format(body)
    return FilterDefinition(
        event_fields=event_fields,
        event_format=event_format,
        presence=parse_event_filter(body.get("presence"), "presence"),
        account_data=parse_event_filter(body.get("account_data"), "account_data"),
        room=_parse_room_filter(body.get("room"), "room"),
    )


def parse_json_param(raw: str) -> Mapping[str, Any]:
    """A JSON object passed in a query parameter (e.g. ``filter``).

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` when it is not JSON, ``M_BAD_JSON`` when not an object.
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError("M_NOT_JSON", "The filter is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise MatrixError("M_BAD_JSON", "The filter must be a JSON object")
    return parsed


async def load_filter(store: FilterStore, user_id: str, param: str) -> FilterDefinition:
    """The filter a ``filter`` query parameter names: inline JSON, or a stored filter's id.

    Raises:
        MatrixError: 400 for malformed JSON or an unknown filter id.

    Checkpoint: when the filter is stored.
    """
    if param.lstrip().startswith("{"):
        return _inline_filter(param)
    if not param.isdigit():
        raise MatrixError("M_INVALID_PARAM", "Invalid filter id")
    stored = await store.get_filter_text(user_id, int(param))
    if stored is None:
        raise MatrixError("M_INVALID_PARAM", "No such filter")
    return _stored_filter(stored)


# A client sends the same filter with every /sync; a definition is immutable, so each text is
# parsed once. Errors are not cached (lru_cache keeps only returned values).
@functools.lru_cache(maxsize=512)
def _inline_filter(param: str) -> FilterDefinition:
    # An inline filter meets the same schema as an uploaded one (as in Synapse); stored
    # filters were checked when uploaded.
    inline = parse_json_param(param)
    validate_filter(inline)
    return parse_filter_definition(inline)


@functools.lru_cache(maxsize=512)
def _stored_filter(text: str) -> FilterDefinition:
    return parse_filter_definition(orjson.loads(text))


def split_field_path(field: str) -> list[str]:
    """Split an ``event_fields`` entry on dots; ``\\.`` is a literal dot, ``\\\\`` a backslash."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in field:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def only_fields(event: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Keep only the listed (dotted) fields of a serialised event (spec ``event_fields``)."""
    result: dict[str, Any] = {}
    for field in fields:
        path = split_field_path(field)
        value: Any = event
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                break
            value = value[key]
        else:
            target = result
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = value
    return result
