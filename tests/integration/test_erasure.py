"""Deactivation with ``erase: true``: the user's messages are served redacted to users who were
not in the room when they were sent (Synapse; SyTest 30rooms/32erasure)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import create_room, join, messages, send_text


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _deactivate(client: Client, password: str, *, erase: bool) -> None:
    body = {"erase": erase}
    response = await client.with_password_uia("POST", "/account/deactivate", body, password)
    assert_ok(response)


async def _timeline(client: Client, room_id: str) -> dict[str, dict[str, Any]]:
    body = assert_ok(await client.get("/sync", params={"timeout": "0"}))
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    return {e["event_id"]: e for e in events}


async def _content_via_messages(client: Client, room_id: str, event_id: str) -> dict[str, Any]:
    chunk = (await messages(client, room_id, dir="b", limit=50))["chunk"]
    content: dict[str, Any] = next(e["content"] for e in chunk if e["event_id"] == event_id)
    return content


async def test_only_original_members_see_messages_of_erased_users(
    alice: Client, bob: Client, carol: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    message_id = await send_text(alice, room_id, "body1")
    await join(carol, room_id)
    # Before erasure everyone who can see it sees it whole (history is "shared").
    assert (await _timeline(carol, room_id))[message_id]["content"]["body"] == "body1"

    await _deactivate(alice, "alicepw", erase=True)

    bob_view = await _timeline(bob, room_id)
    assert bob_view[message_id]["content"]["body"] == "body1"
    carol_view = await _timeline(carol, room_id)
    assert carol_view[message_id]["type"] == "m.room.message"
    assert carol_view[message_id]["content"] == {}
    assert await _content_via_messages(carol, room_id, message_id) == {}
    assert (await _content_via_messages(bob, room_id, message_id))["body"] == "body1"
    event = assert_ok(await carol.get(f"/rooms/{room_id}/event/{message_id}"))
    assert event["content"] == {}
    context = assert_ok(await carol.get(f"/rooms/{room_id}/context/{message_id}"))
    assert context["event"]["content"] == {}


async def test_deactivation_without_erase_keeps_messages(
    alice: Client, bob: Client, carol: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    message_id = await send_text(alice, room_id, "still here")
    await join(carol, room_id)
    await _deactivate(alice, "alicepw", erase=False)
    assert (await _content_via_messages(carol, room_id, message_id))["body"] == "still here"
