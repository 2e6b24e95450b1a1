"""Helpers for the relations and threads tests: sending related events, reading v1 endpoints."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import send

V1 = "/_matrix/client/v1"
_reaction_txns = itertools.count()


async def get_relations(
    client: Client, room_id: str, event_id: str, *path: str, **params: Any
) -> httpx.Response:
    """GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]."""
    url = "/".join([f"{V1}/rooms/{room_id}/relations/{event_id}", *path])
    return await client.http.get(url, params=params, headers=client.headers)


async def relations(
    client: Client, room_id: str, event_id: str, *path: str, **params: Any
) -> dict[str, Any]:
    """The body of a successful /relations request."""
    return assert_ok(await get_relations(client, room_id, event_id, *path, **params))


async def get_threads(client: Client, room_id: str, **params: Any) -> httpx.Response:
    """GET /rooms/{roomId}/threads."""
    return await client.http.get(
        f"{V1}/rooms/{room_id}/threads", params=params, headers=client.headers
    )


async def thread_reply(client: Client, room_id: str, root_id: str, body: str) -> str:
    """Send a threaded reply (as Element does: with the reply fallback); its event id."""
    relates_to = {
        "rel_type": "m.thread",
        "event_id": root_id,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": root_id},
    }
    content = {"msgtype": "m.text", "body": body, "m.relates_to": relates_to}
    return await send(client, room_id, "m.room.message", content)


async def edit(client: Client, room_id: str, original_id: str, body: str) -> str:
    """Send an ``m.replace`` of a message; its event id."""
    content = {
        "msgtype": "m.text",
        "body": f"* {body}",
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_id},
    }
    return await send(client, room_id, "m.room.message", content)


async def react(client: Client, room_id: str, target_id: str, key: str) -> httpx.Response:
    """Send an ``m.reaction`` annotation; the raw response."""
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target_id, "key": key}}
    return await client.put(
        f"/rooms/{room_id}/send/m.reaction/reaction{next(_reaction_txns)}", content
    )


async def reference(client: Client, room_id: str, target_id: str, body: str) -> str:
    """Send a message with an ``m.reference`` relation; its event id."""
    content = {
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": "m.reference", "event_id": target_id},
    }
    return await send(client, room_id, "m.room.message", content)


def bundled(event: dict[str, Any]) -> dict[str, Any]:
    """The event's ``unsigned["m.relations"]`` (empty when absent)."""
    found: dict[str, Any] = event.get("unsigned", {}).get("m.relations", {})
    return found
