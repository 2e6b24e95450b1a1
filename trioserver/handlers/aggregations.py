"""Server-side aggregations: ``unsigned["m.relations"]`` of served events (issue 11).

Theory of operation
-------------------
Spec "Aggregations of child events" (v1.7 and later), as Synapse bundles them:

- ``m.thread``: ``latest_event`` (the whole client event, itself with its edit and
  references), ``count`` and ``current_user_participated`` (the requester sent the root or a
  reply), for an event that is not itself a relation;
- ``m.reference``: ``{"chunk": [{"event_id": ...}]}``, oldest first;
- ``m.replace``: the applicable replacement, the whole event (the server no longer replaces
  the original's content), not for a redacted original.

Annotations are not aggregated (spec v1.7 dropped them). State events, and events that are
themselves edits or annotations, get no aggregations. Replies and references by users the
requester ignores are left out.

Cost: `Aggregator.bundles` reads everything for a batch in one transaction, and none at all
(no I/O) when no event of the batch is in a room with relations
(`RelationStore.may_have_relations`), which is every /sync of rooms that never used them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.events.relations import ANNOTATION, REPLACE, relation_of
from trioserver.stores.events import StoredEvent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.account_data import AccountDataStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.relations import RelationStore


@attrs.frozen
class ThreadBundle:
    """A thread root's ``m.thread`` aggregation."""

    latest: StoredEvent
    count: int
    participated: bool


@attrs.frozen
class Bundle:
    """The aggregations of one event (an empty one is never returned)."""

    thread: ThreadBundle | None = None
    references: tuple[str, ...] = ()
    replace: StoredEvent | None = None


Bundles = dict[str, Bundle]


class Aggregator:
    """Works out the bundled aggregations of the events one requester is served."""

    def __init__(
        self, relations: RelationStore, events: EventStore, account_data: AccountDataStore
    ) -> None:
        self._relations = relations
        self._events = events
        self._account_data = account_data

    async def bundles(self, stored: Sequence[StoredEvent], user_id: str | None) -> Bundles:
        """The aggregations of `stored`, and of the latest events of their threads.

        Checkpoint: only when some event is in a room with relations.
        """
        thread_ids: list[str] = []
        parent_ids: list[str] = []
        edit_ids: list[str] = []
        senders: dict[str, str] = {}
        for item in stored:
            event = item.event
            if event.is_state() or not self._relations.may_have_relations(event.room_id):
                continue
            relation = relation_of(event) if item.redacted_by is None else None
            if relation is not None and relation.rel_type in (ANNOTATION, REPLACE):
                continue
            if relation is None:
                thread_ids.append(item.event_id)
                senders[item.event_id] = event.sender
            parent_ids.append(item.event_id)
            if item.redacted_by is None:
                edit_ids.append(item.event_id)
        if not parent_ids:
            return {}
        ignored = await self._account_data.ignored_users(user_id) if user_id else frozenset()
        found = await self._relations.aggregates(
            thread_ids, parent_ids, edit_ids, user_id or "", ignored
        )
        wanted = [t.latest_event_id for t in found.threads.values()]
        events = await self._events.get_events([*wanted, *found.edits.values()])
        threads: dict[str, ThreadBundle] = {}
        for root, summary in found.threads.items():
            latest = events.get(summary.latest_event_id)
            if latest is not None:
                participated = summary.participated or senders.get(root) == user_id
                threads[root] = ThreadBundle(latest, summary.count, participated)
        result: Bundles = {}
        for event_id in {*threads, *found.references, *found.edits}:
            edit_id = found.edits.get(event_id)
            result[event_id] = Bundle(
                thread=threads.get(event_id),
                references=tuple(found.references.get(event_id, ())),
                replace=events.get(edit_id) if edit_id is not None else None,
            )
        return result
