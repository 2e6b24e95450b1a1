"""Reads of the relations index: aggregations, pagination, threads (issue 11).

Theory of operation
-------------------
``event_relations`` and ``threads`` are written by the events writer, in its transaction
(`stores.relations_index`). This module reads them.

Aggregations are read for a whole served batch in one transaction (`Aggregates`). Most
batches have no related events at all, so `RelationStore` keeps in memory the rooms that
have any relation (loaded at start, then marked by the writer before it commits: see
`note_room_nowait`); events of other rooms need no query.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.events.relations import ANNOTATION, REFERENCE, REPLACE, THREAD
from trioserver.stores.events import RoomPosition

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from trioserver.stores.database import Database, Txn

# Spec: homeservers "SHOULD traverse at least 3 levels of relationships".
RECURSION_DEPTH = 3
_CHUNK = 400


@attrs.frozen
class ThreadSummary:
    """A thread root's ``m.thread`` children, as one requester sees them."""

    latest_event_id: str
    count: int
    participated: bool


@attrs.frozen
class Aggregates:
    """What bundled aggregations need, for a batch of parent events.

    Attributes:
        threads: root id -> summary (roots with at least one visible reply).
        references: parent id -> ids of ``m.reference`` children, oldest first.
        edits: original id -> its applicable replacement (same sender and type, not state;
            most recent by ``origin_server_ts``, then event id: spec "Event replacements").
    """

    threads: dict[str, ThreadSummary]
    references: dict[str, list[str]]
    edits: dict[str, str]


@attrs.frozen
class RelationRow:
    """A relating event found by pagination, at its position in the room."""

    event_id: str
    position: RoomPosition


@attrs.frozen
class ThreadRow:
    """A thread root and the position of its latest reply (``/threads`` order)."""

    thread_id: str
    position: RoomPosition


@attrs.frozen
class RelationPage:
    """The query of one page of ``/relations``.

    Attributes:
        cursor: exclusive store cursor to page from.
        bound: inclusive store bound to stop at (None: the end of the room).
    """

    rel_type: str | None
    event_type: str | None
    cursor: RoomPosition
    bound: RoomPosition | None
    backwards: bool
    limit: int
    recurse: bool


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _rooms_with_relations_txn(txn: Txn) -> set[str]:
    rows = txn.execute("SELECT DISTINCT room_id FROM event_relations").fetchall()
    return {str(row[0]) for row in rows}


def _exists_txn(txn: Txn, sql: str, params: Sequence[Any]) -> bool:
    return txn.execute(sql, params).fetchone() is not None


def _thread_summaries_txn(
    txn: Txn, root_ids: Sequence[str], user_id: str, ignored: Collection[str]
) -> dict[str, ThreadSummary]:
    skip = tuple(ignored)
    not_ignored = f" AND sender NOT IN ({_marks(skip)})" if skip else ""
    counts: dict[str, tuple[int, bool]] = {}
    for chunk in _chunks(root_ids):
        rows = txn.execute(
            "SELECT relates_to_id, COUNT(*), SUM(CASE WHEN sender = ? THEN 1 ELSE 0 END)"
            f" FROM event_relations WHERE relates_to_id IN ({_marks(chunk)})"
            f" AND relation_type = ?{not_ignored} GROUP BY relates_to_id",
            (user_id, *chunk, THREAD, *skip),
        ).fetchall()
        counts.update((str(r[0]), (int(r[1]), bool(r[2]))) for r in rows)
    if not counts:
        return {}
    latest: dict[str, str] = {}
    roots = list(counts)
    if not skip:
        for chunk in _chunks(roots):
            rows = txn.execute(
                "SELECT thread_id, latest_event_id FROM threads"
                f" WHERE thread_id IN ({_marks(chunk)})",
                chunk,
            ).fetchall()
            latest.update((str(r[0]), str(r[1])) for r in rows)
    for root in roots:
        if root in latest:
            continue
        # Ignored users' replies are left out (Synapse), so the `threads` row may not do.
        row = txn.execute(
            "SELECT event_id FROM event_relations WHERE relates_to_id = ? AND relation_type = ?"
            f"{not_ignored} ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
            (root, THREAD, *skip),
        ).fetchone()
        if row is not None:
            latest[root] = str(row[0])
    return {
        root: ThreadSummary(latest[root], count, participated)
        for root, (count, participated) in counts.items()
        if root in latest
    }


def _references_txn(
    txn: Txn, parent_ids: Sequence[str], ignored: Collection[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for chunk in _chunks(parent_ids):
        rows = txn.execute(
            "SELECT relates_to_id, event_id, sender FROM event_relations"
            f" WHERE relates_to_id IN ({_marks(chunk)}) AND relation_type = ?"
            " ORDER BY topological_ordering, stream_ordering",
            (*chunk, REFERENCE),
        ).fetchall()
        for parent, event_id, sender in rows:
            if sender not in ignored:
                found[str(parent)].append(str(event_id))
    return dict(found)


def _edits_txn(txn: Txn, original_ids: Sequence[str]) -> dict[str, str]:
    best: dict[str, tuple[int, str]] = {}
    for chunk in _chunks(original_ids):
        rows = txn.execute(
            "SELECT r.relates_to_id, r.event_id, e.origin_server_ts FROM event_relations AS r"
            " JOIN events AS e ON e.event_id = r.event_id"
            " JOIN events AS o ON o.event_id = r.relates_to_id"
            f" WHERE r.relates_to_id IN ({_marks(chunk)}) AND r.relation_type = ?"
            " AND r.type = o.type AND r.sender = o.sender AND r.room_id = o.room_id"
            " AND e.state_key IS NULL",
            (*chunk, REPLACE),
        ).fetchall()
        for original, event_id, ts in rows:
            key = (int(ts), str(event_id))
            if original not in best or key > best[original]:
                best[str(original)] = key
    return {original: event_id for original, (_, event_id) in best.items()}


def _aggregates_txn(
    txn: Txn,
    thread_ids: Sequence[str],
    reference_ids: Sequence[str],
    edit_ids: Sequence[str],
    user_id: str,
    ignored: Collection[str],
) -> Aggregates:
    threads = _thread_summaries_txn(txn, thread_ids, user_id, ignored)
    # The latest event of a thread is served with its own aggregations (Synapse: edits and
    # references), so read those in the same transaction.
    latest = [t.latest_event_id for t in threads.values()]
    return Aggregates(
        threads=threads,
        references=_references_txn(txn, [*reference_ids, *latest], ignored),
        edits=_edits_txn(txn, [*edit_ids, *latest]),
    )


def _paginate_relations_txn(
    txn: Txn, room_id: str, parent_id: str, page: RelationPage
) -> list[RelationRow]:
    if page.backwards:
        op, bound_op, order = "<", ">=", "DESC"
    else:
        op, bound_op, order = ">", "<=", "ASC"
    where = ["r.room_id = ?", f"(r.topological_ordering, r.stream_ordering) {op} (?, ?)"]
    params: list[Any] = [room_id, page.cursor.topological, page.cursor.stream]
    if page.bound is not None:
        where.append(f"(r.topological_ordering, r.stream_ordering) {bound_op} (?, ?)")
        params += [page.bound.topological, page.bound.stream]
    if page.rel_type is not None:
        where.append("r.relation_type = ?")
        params.append(page.rel_type)
    if page.event_type is not None:
        where.append("r.type = ?")
        params.append(page.event_type)
    if page.recurse:
        # Spec (v1.10) `recurse`: events related through up to RECURSION_DEPTH relations;
        # the filters apply to every level alike.
        source = (
            "WITH RECURSIVE related (event_id, depth) AS ("
            " SELECT event_id, 1 FROM event_relations WHERE relates_to_id = ?"
            " UNION SELECT c.event_id, related.depth + 1 FROM event_relations AS c"
            " JOIN related ON c.relates_to_id = related.event_id WHERE related.depth < ?)"
            " SELECT DISTINCT r.event_id, r.topological_ordering, r.stream_ordering"
            " FROM related JOIN event_relations AS r ON r.event_id = related.event_id"
        )
        params = [parent_id, RECURSION_DEPTH, *params]
    else:
        source = (
            "SELECT r.event_id, r.topological_ordering, r.stream_ordering"
            " FROM event_relations AS r"
        )
        where.insert(0, "r.relates_to_id = ?")
        params.insert(0, parent_id)
    sql = (
        f"{source} WHERE {' AND '.join(where)}"
        f" ORDER BY r.topological_ordering {order}, r.stream_ordering {order} LIMIT ?"
    )
    rows = txn.execute(sql, [*params, page.limit]).fetchall()
    return [RelationRow(str(e), RoomPosition(int(t), int(s))) for e, t, s in rows]


def _threads_txn(
    txn: Txn, room_id: str, before: RoomPosition | None, limit: int
) -> list[ThreadRow]:
    sql = "SELECT thread_id, topological_ordering, stream_ordering FROM threads WHERE room_id = ?"
    params: list[Any] = [room_id]
    if before is not None:
        sql += " AND (topological_ordering, stream_ordering) < (?, ?)"
        params += [before.topological, before.stream]
    sql += " ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT ?"
    rows = txn.execute(sql, [*params, limit]).fetchall()
    return [ThreadRow(str(e), RoomPosition(int(t), int(s))) for e, t, s in rows]


def _participated_txn(txn: Txn, root_ids: Sequence[str], user_id: str) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(root_ids):
        rows = txn.execute(
            "SELECT DISTINCT relates_to_id FROM event_relations"
            f" WHERE relates_to_id IN ({_marks(chunk)}) AND relation_type = ? AND sender = ?",
            (*chunk, THREAD, user_id),
        ).fetchall()
        found.update(str(r[0]) for r in rows)
    return found


class RelationStore:
    """Reads of the relations index, and the rooms known to have relations."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._rooms: set[str] = set()

    async def load(self) -> None:
        """Read which rooms have relations (once, before anything is served).

        Checkpoint: yes.
        """
        self._rooms |= await self._db.run_read("rooms_with_relations", _rooms_with_relations_txn)

    def note_room_nowait(self, room_id: str) -> None:
        """Remember that `room_id` has (or is about to have) a relation.

        The events writer calls this while building an event with a relation, before its
        batch commits, so no read after the commit takes the no-relations fast path.
        """
        self._rooms.add(room_id)

    def may_have_relations(self, room_id: str) -> bool:
        """False only when the room certainly has no relation (no I/O)."""
        return room_id in self._rooms

    async def is_relation(self, event_id: str) -> bool:
        """Whether the event relates to another. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "event_is_relation",
            _exists_txn,
            "SELECT 1 FROM event_relations WHERE event_id = ?",
            (event_id,),
        )

    async def is_relation_target(self, event_id: str) -> bool:
        """Whether some stored event relates to this one. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "event_is_relation_target",
            _exists_txn,
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? LIMIT 1",
            (event_id,),
        )

    async def has_annotated(self, parent_id: str, event_type: str, sender: str, key: str) -> bool:
        """Whether `sender` already annotated the event with this type and key.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "has_user_annotated",
            _exists_txn,
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? AND relation_type = ?"
            " AND type = ? AND sender = ? AND aggregation_key = ? LIMIT 1",
            (parent_id, ANNOTATION, event_type, sender, key),
        )

    async def aggregates(
        self,
        thread_ids: Sequence[str],
        reference_ids: Sequence[str],
        edit_ids: Sequence[str],
        user_id: str,
        ignored: Collection[str],
    ) -> Aggregates:
        """What the aggregations of a batch of served events need, in one read.

        Args:
            thread_ids: events that may be thread roots.
            reference_ids: events that may be referenced.
            edit_ids: events whose replacement is wanted (unredacted ones).
            user_id: the requester (``current_user_participated``).
            ignored: users whose thread replies and references are left out.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "get_aggregates",
            _aggregates_txn,
            thread_ids,
            reference_ids,
            edit_ids,
            user_id,
            ignored,
        )

    async def paginate(
        self, room_id: str, parent_id: str, page: RelationPage
    ) -> list[RelationRow]:
        """One page of the events relating to `parent_id`, in room order. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "paginate_relations", _paginate_relations_txn, room_id, parent_id, page
        )

    async def threads(
        self, room_id: str, before: RoomPosition | None, limit: int
    ) -> list[ThreadRow]:
        """Thread roots by latest reply, newest first, strictly before `before` if given.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline("get_threads", _threads_txn, room_id, before, limit)

    async def participated(self, root_ids: Sequence[str], user_id: str) -> set[str]:
        """The roots among `root_ids` the user sent an ``m.thread`` reply to. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "threads_participated", _participated_txn, root_ids, user_id
        )
