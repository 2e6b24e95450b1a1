"""Helpers for tests that create rooms, send events and read them back over HTTP."""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.integration.client import Client, assert_ok

_txn_ids = itertools.count()


async def create_room(client: Client, **body: Any) -> str:
    """POST /createRoom; the new room's id."""
    return str(assert_ok(await client.post("/createRoom", body))["room_id"])


async def send_text(client: Client, room_id: str, body: str, **extra: Any) -> str:
    """Send an ``m.text`` message; its event id."""
    content = {"msgtype": "m.text", "body": body, **extra}
    return await send(client, room_id, "m.room.message", content)


async def send(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    """Send a message event with a fresh transaction id; its event id."""
    path = f"/rooms/{room_id}/send/{event_type}/txn{next(_txn_ids)}"
    return str(assert_ok(await client.put(path, content))["event_id"])


async def set_state(
    client: Client, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
) -> str:
    """Send a state event; its event id."""
    path = f"/rooms/{room_id}/state/{event_type}/{state_key}"
    return str(assert_ok(await client.put(path, content))["event_id"])


async def set_visibility(client: Client, room_id: str, visibility: str) -> str:
    """Set the room's history visibility."""
    return await set_state(
        client, room_id, "m.room.history_visibility", {"history_visibility": visibility}
    )


async def invite(client: Client, room_id: str, user_id: str) -> None:
    """Invite a user."""
    assert_ok(await client.post(f"/rooms/{room_id}/invite", {"user_id": user_id}))


async def join(client: Client, room_id: str) -> None:
    """Join a room."""
    assert_ok(await client.post(f"/rooms/{room_id}/join", {}))


async def leave(client: Client, room_id: str) -> None:
    """Leave a room."""
    assert_ok(await client.post(f"/rooms/{room_id}/leave", {}))


async def messages(client: Client, room_id: str, **params: Any) -> dict[str, Any]:
    """GET /rooms/{roomId}/messages (a ``filter`` dict is sent as JSON); the body."""
    if isinstance(params.get("filter"), dict):
        params["filter"] = json.dumps(params["filter"])
    return assert_ok(await client.get(f"/rooms/{room_id}/messages", params=params))


async def paginate_all(
    client: Client, room_id: str, direction: str, limit: int, **params: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Page through /messages until a page has no ``end``; (all events, all pages)."""
    events: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    query = {"dir": direction, "limit": limit, **params}
    for _ in range(1000):
        page = await messages(client, room_id, **query)
        pages.append(page)
        events.extend(page["chunk"])
        if "end" not in page:
            return events, pages
        query["from"] = page["end"]
    raise AssertionError("pagination did not end")


async def room_state(client: Client, room_id: str) -> list[dict[str, Any]]:
    """GET /rooms/{roomId}/state (a JSON array)."""
    response = await client.get(f"/rooms/{room_id}/state")
    assert response.status_code == 200, response.text
    state: list[dict[str, Any]] = response.json()
    assert isinstance(state, list)
    return state


def bodies(events: list[dict[str, Any]]) -> list[str]:
    """The bodies of the ``m.room.message`` events, in order."""
    return [e["content"].get("body", "") for e in events if e["type"] == "m.room.message"]


def ids(events: list[dict[str, Any]]) -> list[str]:
    """The event ids, in order."""
    return [e["event_id"] for e in events]
