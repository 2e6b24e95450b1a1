"""The full-text index of events, and searching it (client-server API "Server Side Search").

Theory of operation
-------------------
``event_search`` (sql/14_search.sql) is an SQLite FTS5 table with one row per searchable
event: its rowid is the event's ``stream_ordering`` and its one column the text of the event's
search key (`SEARCH_KEYS`). The events writer adds rows in the transaction that stores the
events (`index_events_txn`, called by `stores.persist_events`) and deletes the row of an event
that a redaction in the batch applies to, in that same transaction; pruning a self-destructing
event deletes its row too (`unindex_events_txn`, called by `stores.censor_events`). So a
redacted or expired event can never be found, and an event is searchable as soon as it is
served.

A search is a keyset scan of the index: FTS5 finds the matching rowids, each is joined to
``events`` on its primary key for the room, type and sender, and the rows come back in the
requested order after an exclusive `SearchCursor`. The caller (`handlers.search`) applies the
visibility rules and pages on with the cursor of the last row it examined.

The match expression is built by `handlers.search_query` from quoted tokens only; nothing a
user types reaches FTS5 as query syntax.

On PostgreSQL (sql/14_search.postgres.sql) the table keeps the text and its ``tsvector``
(`PG_SEARCH_CONFIG`: stemmed like FTS5's porter, no stop words, accents folded in Python by
`fold_accents` for both the text and the query) under a GIN index; the same
statements are built with ``@@ to_tsquery``, ``ts_rank`` (negated, so lower is still better)
and ``ts_headline`` in place of ``MATCH``, ``bm25`` and ``highlight``.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.stores.database import Database, Txn
    from trioserver.stores.events import StoredEvent

# The spec's search keys: the event type each applies to, and the content field indexed.
SEARCH_KEYS: dict[str, tuple[str, str]] = {
    "content.body": ("m.room.message", "body"),
    "content.name": ("m.room.name", "name"),
    "content.topic": ("m.room.topic", "topic"),
}
_FIELD_BY_TYPE = dict(SEARCH_KEYS.values())
# Marks around matched words in `highlight()` output: control characters clients do not send.
HIGHLIGHT_START = "\x02"
HIGHLIGHT_END = "\x03"

SearchOrder = Literal["rank", "recent"]

# PostgreSQL's text search configuration (sql/14_search.postgres.sql): English stemming and
# no stop words, as FTS5's porter tokenizer has none.
PG_SEARCH_CONFIG = "trioserver_search"


def fold_accents(text: str) -> str:
    """`text` without combining marks ("crème" -> "creme"), as FTS5's ``remove_diacritics``
    indexes it; PostgreSQL's vectors and queries are built from folded text."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def searchable_text(stored: StoredEvent) -> str | None:
    """The text an event is indexed under, or None when it is not searchable."""
    event = stored.event
    field = _FIELD_BY_TYPE.get(event.type)
    if field is None:
        return None
    value = event.content.get(field)
    if not isinstance(value, str) or not value:
        return None
    # SQLite's full-text tokenizer stops at NUL; Synapse replaces it the same way.
    return value.replace("\x00", " ")


def index_events_txn(txn: Txn, stored: Iterable[StoredEvent], redacted_ids: Sequence[str]) -> None:
    """Index a batch of new events and drop the events its redactions apply to.

    Runs inside the events writer's transaction (`stores.persist_events`): two statements at
    most per batch, whatever its size.

    Args:
        stored: the batch's events, with their stream orderings.
        redacted_ids: ids of the events that redactions of the batch apply to.
    """
    rows = [
        (s.stream_ordering, text)
        for s in stored
        if s.rejected is None and (text := searchable_text(s)) is not None
    ]
    if rows and txn.dialect == "postgres":
        txn.executemany(
            "INSERT INTO event_search (stream_ordering, value, vector)"
            f" VALUES (?1, ?2, to_tsvector('{PG_SEARCH_CONFIG}', ?3))",
            [(stream, text, fold_accents(text)) for stream, text in rows],
        )
    elif rows:
        txn.executemany("INSERT INTO event_search (rowid, value) VALUES (?, ?)", rows)
    if redacted_ids:
        unindex_events_txn(txn, redacted_ids)


def unindex_events_txn(txn: Txn, event_ids: Sequence[str]) -> None:
    """Remove events from the index (redacted or expired); unknown ids are ignored."""
    key = _KEY[txn.dialect]
    txn.executemany(
        f"DELETE FROM event_search WHERE {key} ="
        " (SELECT stream_ordering FROM events WHERE event_id = ?)",
        [(event_id,) for event_id in event_ids],
    )


@attrs.frozen
class SearchQuery:
    """Which indexed events a search matches (before visibility rules).

    Attributes:
        match: an FTS5 match expression built from quoted tokens only.
        room_ids: the rooms searched (never empty).
        types: the event types of the searched keys (never empty).
        senders: only these senders (None: anyone).
        not_senders: never these senders.
    """

    match: str
    room_ids: tuple[str, ...]
    types: tuple[str, ...]
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    tsquery: str = ""
    """The same match for PostgreSQL's ``to_tsquery`` (`ParsedTerm.tsquery`)."""


@attrs.frozen
class SearchCursor:
    """An exclusive position in the result order: after this (score, stream ordering)."""

    stream_ordering: int
    score: float = 0.0


@attrs.frozen
class SearchHit:
    """One matching event.

    Attributes:
        score: FTS5 ``bm25`` (lower is a better match).
        highlighted: the indexed text with matched words between `HIGHLIGHT_START` and
            `HIGHLIGHT_END`.
    """

    stream_ordering: int
    event_id: str
    room_id: str
    score: float
    highlighted: str

    @property
    def cursor(self) -> SearchCursor:
        """The cursor that continues after this hit."""
        return SearchCursor(self.stream_ordering, self.score)


def _in_list(column: str, values: Sequence[str], *, negate: bool = False) -> str:
    return f"{column} {'NOT IN' if negate else 'IN'} ({','.join('?' * len(values))})"


# Per dialect: the index's key column, the match, the score (lower is better) and the
# highlighted text (its two parameters are the marks).
_KEY = {"sqlite": "event_search.rowid", "postgres": "event_search.stream_ordering"}
_MATCH = {
    "sqlite": "event_search MATCH ?",
    "postgres": f"event_search.vector @@ to_tsquery('{PG_SEARCH_CONFIG}', ?)",
}
_SCORE = {
    "sqlite": "bm25(event_search)",
    # ts_rank is a float4: widened to float8 so that the score a cursor carries (a Python
    # float) compares equal to the one it came from.
    "postgres": f"-CAST(ts_rank(event_search.vector, to_tsquery('{PG_SEARCH_CONFIG}', ?))"
    " AS DOUBLE PRECISION)",
}
_HIGHLIGHT = {
    "sqlite": "highlight(event_search, 0, ?, ?)",
    "postgres": f"ts_headline('{PG_SEARCH_CONFIG}', event_search.value,"
    f" to_tsquery('{PG_SEARCH_CONFIG}', ?),"
    " 'StartSel=' || ? || ', StopSel=' || ? || ', HighlightAll=true')",
}


def _where(txn: Txn, query: SearchQuery) -> tuple[list[str], list[object]]:
    pg = txn.dialect == "postgres"
    clauses = [
        _MATCH[txn.dialect],
        _in_list("e.room_id", query.room_ids),
        _in_list("e.type", query.types),
        # Belt and braces: such events are never indexed (or leave the index) in the first place.
        "e.redacted_by IS NULL AND e.rejected IS NULL AND e.outlier = 0",
    ]
    args: list[object] = [query.tsquery if pg else query.match, *query.room_ids, *query.types]
    if query.senders is not None:
        clauses.append(_in_list("e.sender", query.senders))
        args.extend(query.senders)
    if query.not_senders:
        clauses.append(_in_list("e.sender", query.not_senders, negate=True))
        args.extend(query.not_senders)
    return clauses, args


# CROSS JOIN keeps the full-text index as the outer loop: SQLite can only MATCH through it,
# and each match then costs one primary-key lookup in `events`. PostgreSQL has no CROSS JOIN
# with ON (its planner orders the join itself).
_JOIN = {"sqlite": "CROSS JOIN", "postgres": "JOIN"}
_FROM = {
    dialect: f" FROM event_search {_JOIN[dialect]} events AS e ON e.stream_ordering = {key}"
    for dialect, key in _KEY.items()
}


def _search_txn(
    txn: Txn,
    query: SearchQuery,
    order: SearchOrder,
    after: SearchCursor | None,
    limit: int,
) -> list[SearchHit]:
    clauses, args = _where(txn, query)
    key, score = _KEY[txn.dialect], _SCORE[txn.dialect]
    # The score's own parameter (the tsquery, on PostgreSQL), each time it appears.
    score_args: list[object] = [query.tsquery] if txn.dialect == "postgres" else []
    if order == "recent":
        # Newest first: FTS5 walks rowids (stream orderings) backwards without sorting.
        order_sql = f" ORDER BY {key} DESC"
        order_args: list[object] = []
        if after is not None:
            clauses.append(f"{key} < ?")
            args.append(after.stream_ordering)
    else:
        # Best match first; ties oldest first (as Synapse on SQLite returns them).
        order_sql = f" ORDER BY {score}, {key}"
        order_args = list(score_args)
        if after is not None:
            clauses.append(f"({score} > ? OR ({score} = ? AND {key} > ?))")
            args.extend([*score_args, after.score, *score_args, after.score])
            args.append(after.stream_ordering)
    rows = txn.execute(
        f"SELECT {key}, e.event_id, e.room_id, {score}, {_HIGHLIGHT[txn.dialect]}"
        + _FROM[txn.dialect]
        + " WHERE "
        + " AND ".join(clauses)
        + order_sql
        + " LIMIT ?",
        (*score_args, *score_args, HIGHLIGHT_START, HIGHLIGHT_END, *args, *order_args, limit),
    ).fetchall()
    return [SearchHit(int(s), str(e), str(r), float(b), str(h)) for s, e, r, b, h in rows]


def _count_txn(txn: Txn, query: SearchQuery) -> int:
    clauses, args = _where(txn, query)
    row = txn.execute(
        "SELECT COUNT(*)" + _FROM[txn.dialect] + " WHERE " + " AND ".join(clauses), args
    )
    found = row.fetchone()
    return 0 if found is None else int(found[0])


class SearchStore:
    """Reads of the full-text index (written by the events writer, see above)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self,
        query: SearchQuery,
        order: SearchOrder,
        after: SearchCursor | None,
        limit: int,
    ) -> list[SearchHit]:
        """Up to `limit` matching events after `after`, in `order`.

        Args:
            query: what to match.
            order: ``rank`` (best match first) or ``recent`` (newest first).
            after: continue after this position (None: from the start).
            limit: the most hits to return.

        Returns:
            The hits, in order; fewer than `limit` only when no more match.

        Checkpoint: yes (a thread hop: the cost grows with the number of matches).
        """
        return await self._db.run_read("search_events", _search_txn, query, order, after, limit)

    async def count(self, query: SearchQuery) -> int:
        """How many indexed events match `query` (before visibility rules). Checkpoint: yes."""
        return await self._db.run_read("count_search_events", _count_txn, query)
