"""GET /notifications over real HTTP (spec "Listing Notifications"; SyTest
tests/61push/09_notifications_api.pl)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, send, send_text


async def notifications(client: Client, **params: Any) -> dict[str, Any]:
    return assert_ok(await client.get("/notifications", params=params))


def bodies(body: dict[str, Any]) -> list[str]:
    return [n["event"]["content"].get("body", "") for n in body["notifications"]]


async def shared_room(alice: Client, bob: Client) -> str:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    return room_id


async def test_notifications_newest_first_with_their_fields(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    first = await send_text(bob, room_id, "one")
    await send(bob, room_id, "m.room.message", {"msgtype": "m.notice", "body": "a notice"})
    await send_text(bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}})
    body = await notifications(alice)
    assert bodies(body) == ["two", "one"]
    assert "next_token" not in body
    newest, oldest = body["notifications"]
    assert set(newest) == {"actions", "event", "profile_tag", "read", "room_id", "ts"}
    assert newest["room_id"] == room_id
    assert newest["read"] is False
    assert newest["profile_tag"] is None
    assert isinstance(newest["ts"], int)
    assert "notify" in newest["actions"]
    assert {"set_tweak": "highlight"} in newest["actions"]
    assert oldest["event"]["event_id"] == first
    assert oldest["event"]["sender"] == bob.user_id
    assert oldest["event"]["type"] == "m.room.message"
    # Bob's own messages never notify him; nothing of alice's list is his.
    assert (await notifications(bob))["notifications"] == []


async def test_pagination_and_only_highlight(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    mention = {"m.mentions": {"user_ids": [alice.user_id]}}
    for n in range(5):
        extra = mention if n % 2 == 0 else {}
        await send_text(bob, room_id, f"m{n}", **extra)
    page = await notifications(alice, limit=2)
    assert bodies(page) == ["m4", "m3"]
    page2 = await notifications(alice, limit=2, **{"from": page["next_token"]})
    assert bodies(page2) == ["m2", "m1"]
    page3 = await notifications(alice, limit=2, **{"from": page2["next_token"]})
    assert bodies(page3) == ["m0"]
    assert "next_token" not in page3
    highlights = await notifications(alice, only="highlight")
    assert bodies(highlights) == ["m4", "m2", "m0"]


async def test_read_receipt_removes_read_notifications_but_keeps_highlights(
    alice: Client, bob: Client
) -> None:
    room_id = await shared_room(alice, bob)
    await send_text(bob, room_id, "plain")
    await send_text(bob, room_id, "hey", **{"m.mentions": {"user_ids": [alice.user_id]}})
    last = await send_text(bob, room_id, "plain again")
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{last}", {}))
    body = await notifications(alice)
    assert bodies(body) == ["hey"]
    assert body["notifications"][0]["read"] is True
    await send_text(bob, room_id, "new")
    assert [n["read"] for n in (await notifications(alice))["notifications"]] == [False, True]


async def test_redacted_events_are_not_listed(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    await send_text(bob, room_id, "stays")
    gone = await send_text(bob, room_id, "goes", **{"m.mentions": {"user_ids": [alice.user_id]}})
    assert_ok(await bob.put(f"/rooms/{room_id}/redact/{gone}/r1", {}))
    assert bodies(await notifications(alice)) == ["stays"]
    assert (await notifications(alice, only="highlight"))["notifications"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"from": "abc"},
        {"from": "-1"},
        {"from": "99999999999999999999999"},
        {"limit": "many"},
        {"limit": "0"},
        {"limit": "-3"},
        {"only": "everything"},
    ],
)
async def test_bad_parameters_are_400(alice: Client, params: dict[str, str]) -> None:
    assert_error(await alice.get("/notifications", params=params), 400, "M_INVALID_PARAM")


async def test_needs_an_access_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/_matrix/client/v3/notifications")
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_huge_limit_is_capped(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    await send_text(bob, room_id, "only one")
    assert bodies(await notifications(alice, limit=10**9)) == ["only one"]
