"""Stored events as a client sees them: one serialiser for every read endpoint (and /sync).

`EventSerializer.serialize` does the I/O for a whole batch up front (the redaction events of
redacted events, the requester's transaction ids: one query each), then `format_client_event`
builds each event without I/O:

- the client format (``ClientEvent``) of the event, or its federation format when a filter asks
  for ``event_format: federation``;
- ``unsigned.age`` (now - ``origin_server_ts``), the stored unsigned data of state events
  (``replaces_state``, ``prev_content``, ``prev_sender``), ``unsigned.transaction_id`` for the
  device that sent it (spec "Transaction identifiers"), and ``unsigned.membership``, the
  requester's membership at the event, when the caller knows it (spec ``UnsignedData``);
- a redacted event is served pruned (spec "Redactions": "the server should return the redacted
  form of the event") with ``unsigned.redacted_because``; of the stored unsigned data only
  ``replaces_state`` survives, as in Synapse;
- ``event_fields`` of a filter keeps only the listed fields;
- ``unsigned["m.relations"]``, the bundled aggregations (`handlers.aggregations`, issue 11).

A redaction that names no target (``Event.redacts`` is None, seed 5) is an ordinary event here.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.events.relations import REFERENCE, REPLACE, THREAD
from trioserver.handlers.event_filter import EventFormat, only_fields

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trioserver.events import Event
    from trioserver.handlers.aggregations import Aggregator, Bundle
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.room_reads import RoomReadStore

JsonDict = dict[str, Any]

# Of the server's unsigned data, what a pruned event keeps (Synapse keeps the same).
_KEPT_WHEN_REDACTED = ("replaces_state",)


@attrs.frozen
class SerializeOptions:
    """Who the events are for and in which shape.

    Attributes:
        user_id: the requester; with `device_id`, selects ``unsigned.transaction_id``.
        device_id: the requester's device.
        event_format: ``client`` (default) or ``federation`` (filter ``event_format``).
        event_fields: keep only these dotted fields (filter ``event_fields``).
        include_room_id: ``/sync`` leaves ``room_id`` out.
    """

    user_id: str | None = None
    device_id: str | None = None
    event_format: EventFormat = "client"
    event_fields: tuple[str, ...] | None = None
    include_room_id: bool = True


def _base_dict(event: Event, options: SerializeOptions) -> JsonDict:
    if options.event_format == "federation":
        pdu = event.get_pdu_json()
        pdu["event_id"] = event.event_id
        return pdu
    # The caller replaces ``unsigned`` and only ever adds top-level keys.
    return event.client_fields(include_room_id=options.include_room_id)


def format_client_event(
    stored: StoredEvent,
    *,
    now_ms: int,
    options: SerializeOptions,
    redaction: StoredEvent | None = None,
    txn_id: str | None = None,
    membership: str | None = None,
    relations: JsonDict | None = None,
) -> JsonDict:
    """One event for a client (no I/O).

    Args:
        stored: the event.
        now_ms: the current time, for ``unsigned.age``.
        options: requester and format.
        redaction: the redaction event when ``stored.redacted_by`` is set.
        txn_id: the client transaction id, when the requester's device sent the event.
        membership: the requester's membership at the event (``unsigned.membership``).
        relations: its bundled aggregations (``unsigned["m.relations"]``), if any.

    Returns:
        A fresh JSON object.
    """
    event = stored.event
    unsigned: JsonDict = dict(event.unsigned)
    if stored.redacted_by is not None:
        unsigned = {k: v for k, v in unsigned.items() if k in _KEPT_WHEN_REDACTED}
        event = event.redacted()
        unsigned["redacted_by"] = stored.redacted_by
        if redaction is not None:
            because_options = attrs.evolve(options, event_fields=None)
            unsigned["redacted_because"] = format_client_event(
                _unredactable(redaction), now_ms=now_ms, options=because_options
            )
    unsigned["age"] = now_ms - event.origin_server_ts
    if txn_id is not None:
        unsigned["transaction_id"] = txn_id
    if membership is not None:
        unsigned["membership"] = membership
    if relations is not None:
        unsigned["m.relations"] = relations
    result = _base_dict(event, options)
    result["unsigned"] = unsigned
    if options.event_fields:
        return only_fields(result, options.event_fields)
    return result


def relations_json(
    event_id: str, bundles: Mapping[str, Bundle], *, now_ms: int, options: SerializeOptions
) -> JsonDict | None:
    """``unsigned["m.relations"]`` of one event, or None when it has no aggregations."""
    bundle = bundles.get(event_id)
    if bundle is None:
        return None
    # The events inside are whole events whatever `event_fields` asks of the outer one.
    inner = attrs.evolve(options, event_fields=None)
    result: JsonDict = {}
    if bundle.thread is not None:
        latest = bundle.thread.latest
        result[THREAD] = {
            "latest_event": format_client_event(
                latest,
                now_ms=now_ms,
                options=inner,
                relations=relations_json(latest.event_id, bundles, now_ms=now_ms, options=inner),
            ),
            "count": bundle.thread.count,
            "current_user_participated": bundle.thread.participated,
        }
    if bundle.references:
        result[REFERENCE] = {"chunk": [{"event_id": e} for e in bundle.references]}
    if bundle.replace is not None:
        result[REPLACE] = format_client_event(bundle.replace, now_ms=now_ms, options=inner)
    return result or None


def _unredactable(stored: StoredEvent) -> StoredEvent:
    # A redaction inside ``redacted_because`` is shown pruned if it was itself redacted, but
    # without following that second redaction.
    if stored.redacted_by is None:
        return stored
    return attrs.evolve(stored, event=stored.event.redacted(), redacted_by=None)


class EventSerializer:
    """Turns `StoredEvent`s into client events for one requester, a batch at a time."""

    def __init__(
        self,
        events: EventStore,
        reads: RoomReadStore,
        *,
        clock: Callable[[], float] = time.time,
        aggregator: Aggregator | None = None,
    ) -> None:
        self._events = events
        self._reads = reads
        self._clock = clock
        self._aggregator = aggregator

    async def serialize(
        self,
        stored: Sequence[StoredEvent],
        options: SerializeOptions,
        memberships: Mapping[str, str] | None = None,
    ) -> list[JsonDict]:
        """Serialise events in order.

        Args:
            stored: the events (already checked for visibility by the caller).
            options: requester and format.
            memberships: event id -> the requester's membership at it, where known.

        Checkpoint: when a redaction event is not cached, the requester sent some of the
        events (one query per room for transaction ids), or some are in a room with
        relations (one query for their aggregations).
        """
        redaction_ids = [s.redacted_by for s in stored if s.redacted_by is not None]
        redactions = await self._events.get_events(redaction_ids) if redaction_ids else {}
        txn_ids = await self._txn_ids(stored, options)
        now_ms = int(self._clock() * 1000)
        memberships = memberships or {}
        bundles = (
            await self._aggregator.bundles(stored, options.user_id)
            if self._aggregator is not None
            else {}
        )
        return [
            format_client_event(
                item,
                now_ms=now_ms,
                options=options,
                redaction=redactions.get(item.redacted_by) if item.redacted_by else None,
                txn_id=txn_ids.get(item.event_id),
                membership=memberships.get(item.event_id),
                relations=relations_json(item.event_id, bundles, now_ms=now_ms, options=options)
                if bundles
                else None,
            )
            for item in stored
        ]

    async def _txn_ids(
        self, stored: Sequence[StoredEvent], options: SerializeOptions
    ) -> dict[str, str]:
        if options.user_id is None or options.device_id is None:
            return {}
        by_room: dict[str, list[str]] = collections.defaultdict(list)
        for item in stored:
            if item.event.sender == options.user_id and not item.event.is_state():
                by_room[item.room_id].append(item.event_id)
        found: dict[str, str] = {}
        for room_id, event_ids in by_room.items():
            found.update(
                await self._reads.txn_ids(options.user_id, options.device_id, room_id, event_ids)
            )
        return found
