"""The body of ``POST /search`` and its ``next_batch`` token, parsed and checked (no I/O).

Everything malformed is 400: ``M_BAD_JSON`` naming the key for the body (wrong types, unknown
search keys, category or grouping, a missing, empty or over-long ``search_term``, limits out of
range), ``M_INVALID_PARAM`` for a ``next_batch`` that is not one of ours. Unknown keys inside
``room_events`` are ignored (clients send extensions); the filter is checked by the same
schema as a /sync filter (`filter_schema`).

A ``next_batch`` token is opaque to clients: URL-safe base64 of a small JSON object naming the
order it was made for, the position to continue after, and optionally the group (``room_id``)
whose results it pages through.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import attrs
import orjson

from trioserver.errors import MatrixError
from trioserver.events.identifiers import is_valid_room_id
from trioserver.handlers.event_filter import RoomEventFilter, parse_room_event_filter
from trioserver.handlers.filter_schema import validate_filter
from trioserver.stores.search import SEARCH_KEYS, SearchCursor, SearchOrder

# Bounds (ours; the spec sets none). A search term is a few words typed by a user.
MAX_TERM_LENGTH = 512
# Results per page: a filter asking for more gets this many (and a next_batch).
MAX_LIMIT = 100
DEFAULT_LIMIT = 10
# Events of context on each side of a result: 5 by default (spec), at most this many.
MAX_CONTEXT = 100
DEFAULT_CONTEXT = 5
GROUP_KEYS = ("room_id", "sender")
CATEGORIES = ("room_events",)
_MAX_TOKEN_LENGTH = 1024


def _bad(path: str, what: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", f"'{path}' must be {what}")


@attrs.frozen
class EventContext:
    """Spec ``event_context``: how many events around each result, and the senders' profiles."""

    before_limit: int = DEFAULT_CONTEXT
    after_limit: int = DEFAULT_CONTEXT
    include_profile: bool = False


@attrs.frozen
class RoomEventsSearch:
    """Spec ``search_categories.room_events``, checked."""

    search_term: str
    keys: tuple[str, ...] = tuple(SEARCH_KEYS)
    event_filter: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    order_by: SearchOrder = "rank"
    event_context: EventContext | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()

    @property
    def limit(self) -> int:
        """Results per page (the filter's ``limit``, default 10, at most `MAX_LIMIT`)."""
        limit = self.event_filter.limit
        return DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)


@attrs.frozen
class BatchToken:
    """Where a ``next_batch`` continues: after `cursor`, in `order`, optionally in one group."""

    order: SearchOrder
    cursor: SearchCursor
    group: Literal["room_id"] | None = None
    group_key: str | None = None

    def encode(self) -> str:
        """The opaque string clients pass back as ``next_batch``."""
        body: dict[str, Any] = {
            "o": self.order,
            "s": self.cursor.stream_ordering,
            "r": self.cursor.score,
        }
        if self.group is not None:
            body["g"] = self.group
            body["k"] = self.group_key
        return base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")


def _invalid_batch() -> MatrixError:
    return MatrixError("M_INVALID_PARAM", "Invalid next_batch token")


def parse_batch_token(raw: str, order: SearchOrder) -> BatchToken:
    """Decode a ``next_batch`` made by `BatchToken.encode` for the same `order`.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for anything else.
    """
    if len(raw) > _MAX_TOKEN_LENGTH:
        raise _invalid_batch()
    try:
        body = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise _invalid_batch() from None
    if not isinstance(body, dict) or body.get("o") != order:
        raise _invalid_batch()
    stream, score = body.get("s"), body.get("r")
    if type(stream) is not int or not 0 <= stream < 2**62 or type(score) is not float:
        raise _invalid_batch()
    group, key = body.get("g"), body.get("k")
    if group is None and key is None:
        return BatchToken(order, SearchCursor(stream, score))
    if group != "room_id" or not isinstance(key, str) or not is_valid_room_id(key):
        raise _invalid_batch()
    return BatchToken(order, SearchCursor(stream, score), "room_id", key)


def _term(body: dict[str, Any]) -> str:
    term = body.get("search_term")
    path = "search_categories.room_events.search_term"
    if term is None:
        raise MatrixError("M_BAD_JSON", f"Missing '{path}'")
    if not isinstance(term, str) or not term.strip():
        raise _bad(path, "a non-empty string")
    if len(term) > MAX_TERM_LENGTH:
        raise _bad(path, f"at most {MAX_TERM_LENGTH} characters")
    return term


def _keys(body: dict[str, Any]) -> tuple[str, ...]:
    keys = body.get("keys")
    if keys is None:
        return tuple(SEARCH_KEYS)
    valid = isinstance(keys, list) and all(isinstance(k, str) and k in SEARCH_KEYS for k in keys)
    if not valid or not keys:
        raise _bad(
            "search_categories.room_events.keys",
            "a non-empty array of " + ", ".join(SEARCH_KEYS),
        )
    return tuple(dict.fromkeys(keys))


def _context_limit(body: dict[str, Any], key: str) -> int:
    value = body.get(key, DEFAULT_CONTEXT)
    if type(value) is not int or not 0 <= value <= MAX_CONTEXT:
        raise _bad(f"event_context.{key}", f"an integer from 0 to {MAX_CONTEXT}")
    return value


def _context(raw: Any) -> EventContext | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("event_context", "an object")
    include_profile = raw.get("include_profile", False)
    if not isinstance(include_profile, bool):
        raise _bad("event_context.include_profile", "a boolean")
    return EventContext(
        _context_limit(raw, "before_limit"), _context_limit(raw, "after_limit"), include_profile
    )


def _group_by(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _bad("groupings", "an object")
    group_by = raw.get("group_by")
    if group_by is None:
        return ()
    what = 'an array of {"key": "room_id" | "sender"}'
    if not isinstance(group_by, list):
        raise _bad("groupings.group_by", what)
    keys = [g.get("key") if isinstance(g, dict) else None for g in group_by]
    if not all(k in GROUP_KEYS for k in keys):
        raise _bad("groupings.group_by", what)
    return tuple(dict.fromkeys(str(k) for k in keys))


def _order_by(body: dict[str, Any]) -> SearchOrder:
    order = body.get("order_by", "rank")
    if order == "recent":
        return "recent"
    if order != "rank":
        raise _bad("search_categories.room_events.order_by", "'rank' or 'recent'")
    return "rank"


def _filter(raw: Any) -> RoomEventFilter:
    if raw is None:
        return RoomEventFilter()
    path = "search_categories.room_events.filter"
    if not isinstance(raw, dict):
        raise _bad(path, "an object")
    # The schema of a RoomEventFilter, as inside a /sync filter's `room.timeline`.
    validate_filter({"room": {"timeline": raw}})
    return parse_room_event_filter(raw, path)


def _boolean(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"search_categories.room_events.{key}", "a boolean")
    return value


def parse_search_body(body: dict[str, Any]) -> RoomEventsSearch | None:
    """The ``room_events`` search a ``POST /search`` body asks for (None: no category).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for anything malformed (see the module docstring).
    """
    categories = body.get("search_categories")
    if not isinstance(categories, dict):
        raise _bad("search_categories", "an object")
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise MatrixError("M_BAD_JSON", f"Unknown search category: {unknown[0]!r}")
    room_events = categories.get("room_events")
    if room_events is None:
        return None
    if not isinstance(room_events, dict):
        raise _bad("search_categories.room_events", "an object")
    return RoomEventsSearch(
        search_term=_term(room_events),
        keys=_keys(room_events),
        event_filter=_filter(room_events.get("filter")),
        order_by=_order_by(room_events),
        event_context=_context(room_events.get("event_context")),
        include_state=_boolean(room_events, "include_state"),
        group_by=_group_by(room_events.get("groupings")),
    )
