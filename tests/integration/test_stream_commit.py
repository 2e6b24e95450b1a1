"""A stream position is published only once the row that took it has committed.

The ids are taken inside the write transaction (in the writer's thread, before COMMIT). A
reader that saw the new position then — the replication streamer, a /sync computing its
token — and found no row yet would skip that row for good (review of issue 13).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import trio

from trioserver.stores.database import Txn
from trioserver.streams import StreamIdGenerator

from tests.integration.server_db import store_database


async def test_the_position_moves_when_the_transaction_has_finished(tmp_path: Path) -> None:
    async with store_database(tmp_path, scratch_tables=["t"]) as db:
        await db.run_txn("make", lambda txn: txn.execute("CREATE TABLE t (id INTEGER)"))
        ids = StreamIdGenerator(0)
        db.add_commit_hook(ids.mark_committed)
        taken, release = threading.Event(), threading.Event()
        seen_inside: list[int] = []

        def write(txn: Txn) -> None:
            txn.execute("INSERT INTO t VALUES (?)", (ids.next_id(),))
            taken.set()
            release.wait(5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.run_txn, "write", write)
            await trio.to_thread.run_sync(taken.wait, 5)
            # The id is taken and the row not committed: readers still see 0.
            seen_inside.append(ids.current)
            release.set()
        assert seen_inside == [0]
        assert ids.current == 1


async def test_a_rolled_back_id_is_a_hole_readers_pass(tmp_path: Path) -> None:
    async with store_database(tmp_path) as db:
        ids = StreamIdGenerator(5)
        db.add_commit_hook(ids.mark_committed)

        def fail(txn: Txn) -> None:
            ids.next_id()
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await db.run_txn("fail", fail)
        assert ids.current == 6
        assert ids.next_id() == 7
