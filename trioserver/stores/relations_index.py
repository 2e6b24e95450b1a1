"""The relations index, written in the events writer's transaction (issue 11).

Theory of operation
-------------------
``event_relations`` has one row per stored event with a well-formed ``m.relates_to``
(`trioserver.events.relations.relation_of`), written by `index_relations_txn` (one
``executemany`` per batch, nothing when no event of the batch relates to another); ``threads``
keeps each thread root's latest ``m.thread`` reply. A redaction that applies to a relating
event deletes its row in the same transaction (`unindex_events_txn`; so does the expiry of a
self-destructing message, whose content is pruned the same way), so it drops out of
aggregations, ``/relations`` and ``/threads`` at once; a thread whose latest reply is redacted
gets its previous reply as latest, or loses its row when it has none left. The reads are in
`stores.relations`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.events.relations import THREAD, relation_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Txn
    from trioserver.stores.events import StoredEvent


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def index_relations_txn(txn: Txn, events: Sequence[StoredEvent]) -> None:
    """Index the relations of newly stored events (part of the persist transaction).

    One ``executemany`` for ``event_relations`` and one for ``threads``; nothing at all when
    no event of the batch relates to another.
    """
    rows = []
    threads = []
    for stored in events:
        relation = relation_of(stored.event)
        if relation is None:
            continue
        event = stored.event
        topo, stream = stored.topological_ordering, stored.stream_ordering
        rows.append(
            (
                event.event_id,
                relation.parent_id,
                relation.rel_type,
                relation.aggregation_key,
                event.room_id,
                event.sender,
                event.type,
                stream,
                topo,
            )
        )
        if relation.rel_type == THREAD:
            threads.append((event.room_id, relation.parent_id, event.event_id, topo, stream))
    if not rows:
        return
    txn.executemany(
        "INSERT INTO event_relations (event_id, relates_to_id, relation_type, aggregation_key,"
        " room_id, sender, type, stream_ordering, topological_ordering)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        rows,
    )
    if threads:
        txn.executemany(
            "INSERT INTO threads"
            " (room_id, thread_id, latest_event_id, topological_ordering, stream_ordering)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, thread_id) DO UPDATE SET"
            " latest_event_id = excluded.latest_event_id,"
            " topological_ordering = excluded.topological_ordering,"
            " stream_ordering = excluded.stream_ordering"
            " WHERE (threads.topological_ordering, threads.stream_ordering)"
            " < (excluded.topological_ordering, excluded.stream_ordering)",
            threads,
        )


def unindex_events_txn(txn: Txn, event_ids: Sequence[str]) -> None:
    """Drop redacted (or expired) events from the index, in the transaction that prunes them.

    A thread that loses its latest reply gets the previous one, or no row when none is left.
    """
    found = txn.execute(
        "SELECT room_id, relates_to_id FROM event_relations"
        f" WHERE event_id IN ({_marks(event_ids)}) AND relation_type = ?",
        (*event_ids, THREAD),
    ).fetchall()
    txn.execute(f"DELETE FROM event_relations WHERE event_id IN ({_marks(event_ids)})", event_ids)
    for room_id, thread_id in set(found):
        latest = txn.execute(
            "SELECT event_id, topological_ordering, stream_ordering FROM event_relations"
            " WHERE relates_to_id = ? AND relation_type = ?"
            " ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
            (thread_id, THREAD),
        ).fetchone()
        if latest is None:
            txn.execute(
                "DELETE FROM threads WHERE room_id = ? AND thread_id = ?", (room_id, thread_id)
            )
        else:
            txn.execute(
                "UPDATE threads SET latest_event_id = ?, topological_ordering = ?,"
                " stream_ordering = ? WHERE room_id = ? AND thread_id = ?",
                (*latest, room_id, thread_id),
            )
