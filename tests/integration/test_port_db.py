"""`trioserver port-db`: a server's SQLite database moved to PostgreSQL, as real processes.

The source is filled by real traffic through a server on SQLite; port-db runs as a
subprocess; the server is then started on the PostgreSQL copy and must answer as before.
Each test gets a fresh C-collated PostgreSQL database, dropped afterwards (the server is
the one of ``TRIOSERVER_TEST_POSTGRES``, else this machine's on 127.0.0.1:5432).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg
import pytest

import trio

from trioserver.errors import StartupError
from trioserver.port_db.source import SEARCH_TABLE, SqliteSource
from trioserver.stores.postgres_admin import create_database, drop_database, dsn_for_database
from trioserver.stores.sqlite_lock import exclusive_database_lock
from trioserver.testing import POSTGRES_ENV, InProcessServer, serve_in_process

from tests.integration.client import Client, assert_ok
from tests.integration.e2ee_helpers import Device
from tests.integration.media_helpers import download_path, upload
from tests.integration.relation_helpers import edit, react
from tests.integration.room_helpers import create_room, invite, join, messages, send_text
from tests.integration.test_cli import run_cli, server_process

ADMIN_DSN = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"
COMMAND = [sys.executable, "-m", "trioserver"]
SQLITE = {"backend": "sqlite"}  # explicit: TRIOSERVER_TEST_POSTGRES must not move the source
# Searched for after the move; the accents and stop words make its index depend on how the
# text is prepared.
NEEDLE = "a needle in the haystack, with crème brûlée"


@pytest.fixture
def target_dsn() -> Iterator[str]:
    """A new empty C-collated PostgreSQL database."""
    name = f"trioserver_port_{os.getpid()}_{secrets.token_hex(4)}"
    dsn = create_database(ADMIN_DSN, name)
    try:
        yield dsn
    finally:
        drop_database(ADMIN_DSN, name)


def write_config(data_dir: Path) -> Path:
    """The config file the servers of `serve_in_process` would have (port-db reads one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "trioserver.toml"
    path.write_text('server_name = "localhost"\n')
    return path


async def port_db(config: Path, dsn: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = await run_cli("port-db", "--config", config, "--to", dsn, *args, cwd=config.parent)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


def assert_refused(result: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    """One ``error:`` line naming every fragment, exit status 1."""
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- what the server knows, before and after --------------------------------------------------


@attrs.define
class Traffic:
    """What the filling traffic left behind, to ask the ported server about."""

    alice: tuple[str, str, str]  # user id, access token, device id
    bob: tuple[str, str, str]
    room_id: str
    media_uri: str
    media: bytes


def without_age(value: Any) -> Any:
    """`value` without ``unsigned.age`` (computed from the clock at each answer)."""
    if isinstance(value, dict):
        return {
            k: without_age(v)
            for k, v in value.items()
            if not (k in ("age", "last_active_ago") and isinstance(v, int))
        }
    if isinstance(value, list):
        return [without_age(v) for v in value]
    return value


def session(http: httpx.AsyncClient, who: tuple[str, str, str]) -> Client:
    # The access token from before the port: a new login would change the device lists.
    return Client(http, who[0], who[1], who[2])


async def fill(hs: InProcessServer) -> Traffic:
    """Real traffic: rooms, messages, an edit and a reaction, keys, receipts, account data,
    to-device, a report, a media upload."""
    a = await hs.register_user("alice", "alicepw")
    b = await hs.register_user("bob", "bobpw")
    async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http:
        alice = Client(http, a.user_id, a.access_token, a.device_id)
        bob = Client(http, b.user_id, b.access_token, b.device_id)
        room = await create_room(alice, name="Port", topic="moving house")
        await invite(alice, room, bob.user_id)
        await join(bob, room)
        first = await send_text(alice, room, "the first message")
        for i in range(25):
            await send_text(alice if i % 2 else bob, room, f"message {i}")
        await send_text(bob, room, NEEDLE)
        await edit(alice, room, first, "the first message, edited")
        assert_ok(await react(bob, room, first, "👍"))
        device = Device(alice)
        await device.upload(
            device_keys=device.device_keys(),
            one_time_keys={
                f"signed_curve25519:k{i}": device.one_time_key(f"otk{i}") for i in range(3)
            },
        )
        assert_ok(await bob.post(f"/rooms/{room}/receipt/m.read/{first}", {}))
        assert_ok(await alice.put(f"/user/{alice.user_id}/account_data/org.example", {"a": 1}))
        assert_ok(
            await alice.put(
                f"/user/{alice.user_id}/rooms/{room}/account_data/org.example.room", {"b": 2}
            )
        )
        to_bob = {bob.user_id: {bob.device_id: {"hello": "bob"}}}
        assert_ok(await alice.put("/sendToDevice/org.example.test/t1", {"messages": to_bob}))
        assert_ok(await bob.post(f"/rooms/{room}/report/{first}", {"reason": "testing"}))
        media = b"port-db media bytes\n" * 50
        uri = await upload(alice, media, "text/plain")
    return Traffic(
        (a.user_id, a.access_token, a.device_id),
        (b.user_id, b.access_token, b.device_id),
        room,
        uri,
        media,
    )


@attrs.define
class Answers:
    """What the server answers alice (and bob's pending to-device message)."""

    sync: dict[str, Any]
    history: dict[str, Any]
    keys: dict[str, Any]
    download: tuple[bytes, str]


async def answers(hs: InProcessServer, traffic: Traffic) -> Answers:
    async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http:
        alice = session(http, traffic.alice)
        sync = assert_ok(await alice.get("/sync"))
        history = await messages(alice, traffic.room_id, dir="b", limit=100)
        keys = assert_ok(await alice.post("/keys/query", {"device_keys": {alice.user_id: []}}))
        media = await http.get(download_path(traffic.media_uri), headers=alice.headers)
        assert media.status_code == 200
        return Answers(sync, history, keys, (media.content, media.headers["content-type"]))


def joined(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    room: dict[str, Any] = sync["rooms"]["join"][room_id]
    return room


def assert_same_answers(before: Answers, after: Answers, room_id: str) -> None:
    # Timeline events byte for byte (as JSON text), only the clock-derived age aside.
    def timeline(sync: dict[str, Any]) -> list[str]:
        events = joined(sync, room_id)["timeline"]["events"]
        return [json.dumps(without_age(e), sort_keys=True) for e in events]

    assert timeline(after.sync) == timeline(before.sync)
    for part in ("state", "account_data", "ephemeral", "unread_notifications"):
        assert without_age(joined(after.sync, room_id).get(part)) == without_age(
            joined(before.sync, room_id).get(part)
        ), part
    assert after.sync["account_data"] == before.sync["account_data"]
    # The same stream positions: a token from before the port means the same after it.
    assert after.sync["next_batch"] == before.sync["next_batch"]
    assert without_age(after.history) == without_age(before.history)
    assert after.keys == before.keys
    assert after.download == before.download


def assert_same_rows(sqlite_path: Path, dsn: str) -> None:
    """Every copied table holds the same rows on both sides; the search index the same text."""
    conn = sqlite3.connect(f"{sqlite_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        with psycopg.connect(dsn) as pg:
            for spec in SqliteSource(conn).tables():
                cols = ", ".join(spec.columns)
                lite = conn.execute(f"SELECT {cols} FROM {spec.name}").fetchall()
                copied = pg.execute(f"SELECT {cols} FROM {spec.name}").fetchall()
                assert sorted(copied, key=repr) == sorted(lite, key=repr), spec.name
            lite = conn.execute(f"SELECT rowid, value FROM {SEARCH_TABLE}").fetchall()
            indexed = pg.execute(f"SELECT stream_ordering, value FROM {SEARCH_TABLE}").fetchall()
            assert sorted(indexed) == sorted(lite)
            leftovers = pg.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'port_db%'"
            ).fetchone()
            assert leftovers == (0,)
    finally:
        conn.close()


# -- the port ---------------------------------------------------------------------------------


async def test_a_ported_server_answers_as_before_and_goes_on(
    tmp_path: Path, target_dsn: str
) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE) as hs:
        traffic = await fill(hs)
        before = await answers(hs, traffic)
    config = write_config(data_dir)
    sqlite_path = data_dir / "homeserver.db"
    digest = file_digest(sqlite_path)

    result = await port_db(config, target_dsn)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert f'[database]\nbackend = "postgres"\ndsn = "{target_dsn}"\n' in out
    assert "left untouched" in out
    assert "events " in err  # a progress line per table
    assert file_digest(sqlite_path) == digest
    assert_same_rows(sqlite_path, target_dsn)

    postgres = {"backend": "postgres", "dsn": target_dsn}
    async with serve_in_process(data_dir, database=postgres) as hs:
        assert hs.config.database.backend == "postgres"
        after = await answers(hs, traffic)
        assert_same_answers(before, after, traffic.room_id)
        async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http:
            alice = session(http, traffic.alice)
            bob = session(http, traffic.bob)
            found = assert_ok(
                await alice.post(
                    "/search",
                    {"search_categories": {"room_events": {"search_term": "needle"}}},
                )
            )["search_categories"]["room_events"]
            assert [r["result"]["content"]["body"] for r in found["results"]] == [NEEDLE]
            # port-db indexes text exactly as the server does: the same text sent now gets
            # the same search vector as the copied one.
            again = await send_text(bob, traffic.room_id, NEEDLE)
            with psycopg.connect(target_dsn) as pg:
                vectors = pg.execute(
                    "SELECT s.vector::text FROM event_search AS s JOIN events AS e"
                    " ON e.stream_ordering = s.stream_ordering WHERE s.value = %s"
                    " ORDER BY e.event_id = %s",
                    (NEEDLE, again),
                ).fetchall()
            assert len(vectors) == 2
            assert vectors[0] == vectors[1]
            # Bob's to-device message waited in his inbox through the move.
            bob_sync = assert_ok(await bob.get("/sync"))
            assert [m["content"] for m in bob_sync["to_device"]["events"]] == [{"hello": "bob"}]
            # The streams and identities go on: new messages come after the old token, a
            # new room gets new state groups, a new report a new id.
            new_id = await send_text(alice, traffic.room_id, "sent after the move")
            since = before.sync["next_batch"]
            later = assert_ok(await alice.get("/sync", params={"since": since, "timeout": 0}))
            timeline = joined(later, traffic.room_id)["timeline"]["events"]
            assert [e["event_id"] for e in timeline] == [again, new_id]
            other = await create_room(alice, name="After")
            await send_text(alice, other, "a new room")
            assert_ok(
                await alice.post(f"/rooms/{traffic.room_id}/report/{new_id}", {"reason": "2"})
            )
            claimed = assert_ok(
                await bob.post(
                    "/keys/claim",
                    {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
                )
            )
            assert claimed["one_time_keys"][alice.user_id][alice.device_id]


async def test_an_interrupted_port_continues_where_it_stopped(
    tmp_path: Path, target_dsn: str
) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE) as hs:
        await fill(hs)
    config = write_config(data_dir)
    args = [*COMMAND, "port-db", "--config", str(config), "--to", target_dsn]

    # Ctrl-C, then kill -9, each once the first table is reported copied.
    for signum in (signal.SIGINT, signal.SIGKILL):
        process = await trio.lowlevel.open_process(
            [*args, "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        err = b""
        with trio.fail_after(30):
            while b"\n" not in err:
                chunk = await process.stderr.receive_some()
                assert chunk, err
                err += chunk
            process.send_signal(signum)
            while chunk := await process.stderr.receive_some():
                err += chunk
            status = await process.wait()
        if signum == signal.SIGINT:
            assert status == 130, err
            assert b"interrupted: run the same command again to continue" in err
            assert b"Traceback" not in err
        else:
            assert status == -signal.SIGKILL
        with psycopg.connect(target_dsn) as pg:
            done = pg.execute("SELECT table_name FROM port_db_progress WHERE done").fetchall()
            left = pg.execute("SELECT count(*) FROM port_db_progress WHERE NOT done").fetchone()
        assert done
        assert left is not None
        assert left[0] > 0

    result = await port_db(config, target_dsn)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Finished" in result.stdout
    assert_same_rows(data_dir / "homeserver.db", target_dsn)


async def test_text_with_nul_is_refused_or_replaced(tmp_path: Path, target_dsn: str) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE) as hs:
        user = await hs.register_user("alice")
        async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http:
            alice = Client(http, user.user_id, user.access_token, user.device_id)
            path = f"/profile/{alice.user_id}/displayname"
            assert_ok(await alice.put(path, {"displayname": "nul\u0000name"}))
    config = write_config(data_dir)

    refused = await port_db(config, target_dsn)
    assert_refused(refused, "profiles.displayname", "NUL", "--replace-nul")
    replaced = await port_db(config, target_dsn, "--replace-nul")
    assert replaced.returncode == 0, replaced.stderr.decode()
    assert b"profiles: replaced NUL characters in 1 values" in replaced.stdout
    with psycopg.connect(target_dsn) as pg:
        row = pg.execute("SELECT displayname FROM profiles").fetchone()
    assert row == ("nul name",)


# -- refusals ---------------------------------------------------------------------------------


async def test_refuses_a_target_that_is_not_empty(tmp_path: Path, target_dsn: str) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE) as hs:
        await hs.register_user("alice")
    config = write_config(data_dir)
    assert (await port_db(config, target_dsn)).returncode == 0
    # A finished port is data like any other.
    again = await port_db(config, target_dsn)
    assert_refused(again, "not empty", "access_tokens", "LC_COLLATE 'C'")

    # An unfinished port of another database is not continued from this one.
    other_dir = tmp_path / "other"
    async with serve_in_process(other_dir, database=SQLITE):
        pass
    other = write_config(other_dir)
    with psycopg.connect(target_dsn, autocommit=True) as pg:
        pg.execute("DROP SCHEMA public CASCADE")
        pg.execute("CREATE SCHEMA public")
    process = await trio.lowlevel.open_process(
        [*COMMAND, "port-db", "--config", str(other), "--to", target_dsn, "--batch-size", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    with trio.fail_after(30):
        await process.stderr.receive_some()
        process.kill()
        await process.wait()
    assert_refused(
        await port_db(config, target_dsn), "unfinished port", str(other_dir / "homeserver.db")
    )


async def test_refuses_while_the_server_runs(tmp_path: Path, target_dsn: str) -> None:
    result = await run_cli(
        "generate-config", "--data-dir", "data", "--server-name", "localhost", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()
    config = tmp_path / "data" / "trioserver.toml"
    async with server_process("--data-dir", "data", cwd=tmp_path) as server:
        refused = await port_db(config, target_dsn)
        assert_refused(refused, "the server is running", f"pid {server.process.pid}")
    # Stopped: the lock is free again.
    assert (await port_db(config, target_dsn)).returncode == 0


async def test_refuses_while_a_server_in_this_process_runs(
    tmp_path: Path, target_dsn: str
) -> None:
    data_dir = tmp_path / "data"
    config = write_config(data_dir)
    async with serve_in_process(data_dir, database=SQLITE):
        assert_refused(await port_db(config, target_dsn), "the server is running", "pid")


async def test_a_server_does_not_start_during_a_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE):
        pass
    with (
        exclusive_database_lock(data_dir / "homeserver.db"),
        pytest.raises(StartupError, match="being copied by trioserver port-db"),
    ):
        async with serve_in_process(data_dir, database=SQLITE):
            pass  # pragma: no cover
    async with serve_in_process(data_dir, database=SQLITE):
        pass


async def test_refuses_a_target_that_does_not_collate_as_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE):
        pass
    config = write_config(data_dir)
    name = f"trioserver_port_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as pg:
        pg.execute(f"CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE 'C.UTF-8'")
    try:
        refused = await port_db(config, dsn_for_database(ADMIN_DSN, name))
        assert_refused(refused, "collation is C.UTF-8", "LC_COLLATE 'C'")
    finally:
        drop_database(ADMIN_DSN, name)


async def test_refuses_a_missing_or_outdated_source(tmp_path: Path, target_dsn: str) -> None:
    data_dir = tmp_path / "data"
    config = write_config(data_dir)
    missing = await port_db(config, target_dsn)
    assert_refused(missing, "no SQLite database", str(data_dir / "homeserver.db"))
    assert not (data_dir / "homeserver.db.lock").exists()

    async with serve_in_process(data_dir, database=SQLITE):
        pass
    with sqlite3.connect(data_dir / "homeserver.db") as conn:
        conn.execute("DELETE FROM schema_files WHERE name = '20_membership_changes_index.sql'")
    conn.close()
    outdated = await port_db(config, target_dsn)
    assert_refused(outdated, "older schema level", "20_membership_changes_index.sql")


async def test_refuses_a_target_that_cannot_be_reached(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serve_in_process(data_dir, database=SQLITE):
        pass
    config = write_config(data_dir)
    absent = dsn_for_database(ADMIN_DSN, f"trioserver_absent_{secrets.token_hex(4)}")
    assert_refused(await port_db(config, absent), "cannot connect", "(--to)")
