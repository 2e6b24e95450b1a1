"""Reporting content over real HTTP (spec "Reporting content"): events, rooms and users."""

from __future__ import annotations

from typing import Any

import httpx

from trioserver.testing import InProcessServer

from tests.integration.client import V3, Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, send_text
from tests.integration.server_db import server_db


def stored(hs: InProcessServer, table: str) -> list[tuple[Any, ...]]:
    """The rows of a report table, read straight from the server's database."""
    columns = {
        "event_reports": "room_id, event_id, user_id, reason, content",
        "room_reports": "room_id, user_id, reason",
        "user_reports": "target_user_id, user_id, reason",
    }[table]
    with server_db(hs.config) as db:
        return db.rows(f"SELECT {columns} FROM {table} ORDER BY id")


async def test_report_an_event(hs: InProcessServer, alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    event = await send_text(alice, room, "rude")
    body = {"reason": "offensive", "score": -100, "extra": "x" * 1000}
    assert assert_ok(await bob.post(f"/rooms/{room}/report/{event}", body)) == {}
    # Both keys are optional.
    assert_ok(await bob.post(f"/rooms/{room}/report/{event}", {}))
    rows = stored(hs, "event_reports")
    assert [r[:4] for r in rows] == [
        (room, event, bob.user_id, "offensive"),
        (room, event, bob.user_id, None),
    ]
    assert rows[0][4] == '{"reason":"offensive","score":-100}'


async def test_event_reports_need_a_visible_event(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    private = await create_room(alice)
    secret = await send_text(alice, private, "secret")
    other = await create_room(alice, preset="public_chat")
    await join(bob, other)
    # Not in the room, an unknown event, an event of another room: all 404, as unknown.
    for room, event in ((private, secret), (other, "$unknown"), (other, secret)):
        response = await bob.post(f"/rooms/{room}/report/{event}", {"reason": "x"})
        assert_error(response, 404, "M_NOT_FOUND")
    # A redacted event cannot be reported either (Synapse).
    gone = await send_text(alice, other, "gone")
    assert_ok(await alice.put(f"/rooms/{other}/redact/{gone}/r1", {}))
    assert_error(await bob.post(f"/rooms/{other}/report/{gone}", {}), 404, "M_NOT_FOUND")
    assert stored(hs, "event_reports") == []


async def test_bad_event_reports(hs: InProcessServer, alice: Client) -> None:
    room = await create_room(alice)
    event = await send_text(alice, room, "hello")
    path = f"/rooms/{room}/report/{event}"
    for body in (
        {"score": 1},
        {"score": -101},
        {"score": "-5"},
        {"score": -5.5},
        {"score": True},
        {"reason": 12},
        {"reason": "x" * 1001},
    ):
        assert_error(await alice.post(path, body), 400, "M_INVALID_PARAM")
    assert_error(await alice.post(path, ["reason"]), 400, "M_BAD_JSON")
    not_json = await alice.http.post(V3 + path, content=b"{", headers=alice.headers)
    assert_error(not_json, 400, "M_NOT_JSON")
    assert stored(hs, "event_reports") == []


async def test_report_a_room(hs: InProcessServer, alice: Client, bob: Client) -> None:
    room = await create_room(alice)
    # Anyone may report a room the server knows, member or not.
    assert assert_ok(await bob.post(f"/rooms/{room}/report", {"reason": "spam"})) == {}
    assert_ok(await alice.post(f"/rooms/{room}/report", {"reason": ""}))
    assert_error(
        await bob.post("/rooms/!nope:localhost/report", {"reason": "x"}), 404, "M_NOT_FOUND"
    )
    assert_error(await bob.post(f"/rooms/{room}/report", {}), 400, "M_MISSING_PARAM")
    assert_error(await bob.post(f"/rooms/{room}/report", {"reason": 1}), 400, "M_INVALID_PARAM")
    long = {"reason": "x" * 1001}
    assert_error(await bob.post(f"/rooms/{room}/report", long), 400, "M_INVALID_PARAM")
    assert stored(hs, "room_reports") == [(room, bob.user_id, "spam"), (room, alice.user_id, "")]


async def test_report_a_user(hs: InProcessServer, alice: Client, bob: Client) -> None:
    assert assert_ok(await alice.post(f"/users/{bob.user_id}/report", {"reason": "rude"})) == {}
    # Unknown and remote users: 200, so that a report does not tell whether an account exists;
    # nothing is stored.
    assert_ok(await alice.post("/users/@ghost:localhost/report", {"reason": "x"}))
    assert_ok(await alice.post("/users/@someone:elsewhere.org/report", {"reason": "x"}))
    path = f"/users/{bob.user_id}/report"
    assert_error(await alice.post(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.post(path, {"reason": ["x"]}), 400, "M_INVALID_PARAM")
    assert_error(await alice.post(path, {"reason": "x" * 1001}), 400, "M_INVALID_PARAM")
    assert stored(hs, "user_reports") == [(bob.user_id, alice.user_id, "rude")]


async def test_reports_need_a_token(alice: Client, http: httpx.AsyncClient) -> None:
    room = await create_room(alice)
    for path in (
        f"/rooms/{room}/report/$e",
        f"/rooms/{room}/report",
        "/users/@a:localhost/report",
    ):
        response = await http.post(V3 + path, json={"reason": "x"})
        assert_error(response, 401, "M_MISSING_TOKEN")
