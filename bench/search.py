"""Measure the search index's reads (`SearchStore`) on a large synthetic index.

Setup: a real trioserver database (WAL, the schema applied) in a temporary directory, with
``--messages`` ``m.room.message`` rows in ``events`` spread evenly at random over ``--rooms``
rooms, each indexed in ``event_search`` with eight words: 30% drawn from five common words
("hello", "meeting", "lunch", "the", "and"), the rest from a vocabulary of 20,000. The searcher
is in ``--joined`` of the rooms. Each term is searched ``--repeat`` times per order (a page of
20 hits, as `handlers.search` asks for a page of 10) and counted; reported: the median wall
time of one page and of the count, through `Database.run_read` (a thread hop), as /search
pays it. Visibility checks and serialising are not included (they cost the same as for
/messages pages of that size).

Run (about a minute to build the index)::

    .venv/bin/python bench/search.py
    .venv/bin/python bench/search.py --messages 1000000 --rooms 2000 --joined 100
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from trioserver.handlers.search_query import parse_search_term
from trioserver.stores.database import open_database
from trioserver.stores.search import SearchOrder, SearchQuery, SearchStore

from benchlib import machine_summary, print_table

if TYPE_CHECKING:
    from trioserver.stores.database import Txn

COMMON = ("hello", "meeting", "lunch", "the", "and")
TERMS = ("w123", "hello", "hello meeting", '"the and"')
ORDERS: tuple[SearchOrder, ...] = ("recent", "rank")


def _fill(txn: Txn, messages: int, rooms: int) -> None:
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(20_000)]
    events, texts = [], []
    for i in range(1, messages + 1):
        room = f"!r{rng.randrange(rooms)}:bench"
        events.append((i, f"$e{i}", room, "m.room.message", "@u:bench", i, 0, 0))
        words = [rng.choice(COMMON if rng.random() < 0.3 else vocabulary) for _ in range(8)]
        texts.append((i, " ".join(words)))
    txn.executemany(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, sender,"
        " topological_ordering, origin_server_ts, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        events,
    )
    txn.executemany("INSERT INTO event_search (rowid, value) VALUES (?, ?)", texts)


async def measure(args: argparse.Namespace) -> list[list[str]]:
    """Build the index, then time each term and order; table rows."""
    with tempfile.TemporaryDirectory(prefix="trioserver-search-bench-") as tmp:
        async with open_database(Path(tmp) / "homeserver.db") as db:
            start = time.perf_counter()
            await db.run_txn("fill_search_bench", _fill, args.messages, args.rooms)
            print(
                f"index of {args.messages} messages built in {time.perf_counter() - start:.1f} s"
            )
            store = SearchStore(db)
            rooms = tuple(sorted(f"!r{i}:bench" for i in range(args.joined)))
            rows = []
            for term in TERMS:
                match = parse_search_term(term).match
                assert match is not None
                query = SearchQuery(match, rooms, ("m.room.message",))
                for order in ORDERS:
                    pages, counts, count = [], [], 0
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        await store.search(query, order, None, 20)
                        t1 = time.perf_counter()
                        count = await store.count(query)
                        pages.append(t1 - t0)
                        counts.append(time.perf_counter() - t1)
                    rows.append(
                        [
                            term,
                            order,
                            str(count),
                            f"{statistics.median(pages) * 1000:.1f}",
                            f"{statistics.median(counts) * 1000:.1f}",
                        ]
                    )
            return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200_000, help="indexed messages")
    parser.add_argument("--rooms", type=int, default=500, help="rooms they are spread over")
    parser.add_argument("--joined", type=int, default=20, help="rooms the searcher is in")
    parser.add_argument("--repeat", type=int, default=9, help="searches per term and order")
    args = parser.parse_args(argv)
    print(f"machine: {machine_summary()}")
    headers = ["term", "order", "matches in joined rooms", "page ms", "count ms"]
    print_table(headers, trio.run(measure, args))


if __name__ == "__main__":
    main()
