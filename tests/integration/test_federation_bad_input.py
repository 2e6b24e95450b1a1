"""Bad input to the Server-Server API (issue 15): every endpoint answers junk from a properly
authenticated server with a Matrix error, never a 500, and the room goes on working."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.integration.client import assert_ok
from tests.integration.federation_forge import ActingServer
from tests.integration.federation_helpers import (
    federated_server,
    free_port,
    fresh_tls,
    texts,
    wait_for,
)
from tests.integration.room_helpers import create_room, send_text

F = "/_matrix/federation"


def _requests(room_id: str, user_id: str, event_id: str) -> list[tuple[str, str, Any]]:
    r, u, e = quote(room_id, safe=""), quote(user_id, safe=""), quote(event_id, safe="")
    junk_pdu = {"room_id": room_id, "type": 5, "sender": [], "depth": "x"}
    return [
        ("PUT", f"{F}/v1/send/t1", {"pdus": "nope"}),
        ("PUT", f"{F}/v1/send/t2", {"pdus": [1, "x", None, {}], "edus": [1, {}]}),
        ("PUT", f"{F}/v1/send/t3", {"pdus": [junk_pdu] * 3}),
        ("PUT", f"{F}/v1/send/t4", {"pdus": [{}] * 51}),
        ("PUT", f"{F}/v1/send/t5", []),
        ("GET", f"{F}/v1/event/{quote('$nope', safe='')}", None),
        ("GET", f"{F}/v1/event/not-an-id", None),
        ("GET", f"{F}/v1/state/{r}", None),
        ("GET", f"{F}/v1/state/{r}?event_id=%24nope", None),
        ("GET", f"{F}/v1/state_ids/{r}?event_id=", None),
        ("GET", f"{F}/v1/state_ids/{quote('!nope:x', safe='')}?event_id={e}", None),
        ("GET", f"{F}/v1/event_auth/{r}/{quote('$nope', safe='')}", None),
        ("GET", f"{F}/v1/backfill/{r}", None),
        ("GET", f"{F}/v1/backfill/{r}?v={e}&limit=abc", None),
        ("GET", f"{F}/v1/backfill/{r}?v={e}&limit=-5", None),
        ("POST", f"{F}/v1/get_missing_events/{r}", {"latest_events": "x"}),
        ("POST", f"{F}/v1/get_missing_events/{r}", {"latest_events": [e], "limit": "ten"}),
        ("POST", f"{F}/v1/get_missing_events/{r}", [1, 2]),
        ("GET", f"{F}/v1/make_join/{r}/{u}", None),
        ("GET", f"{F}/v1/make_join/{r}/not-a-user", None),
        ("GET", f"{F}/v1/make_join/{quote('!nope:x', safe='')}/{u}?ver=10", None),
        ("GET", f"{F}/v1/make_knock/{r}/{u}?ver=10", None),
        ("GET", f"{F}/v1/make_leave/{r}/{u}", None),
        ("PUT", f"{F}/v2/send_join/{r}/{e}", {"type": "m.room.member"}),
        ("PUT", f"{F}/v2/send_join/{r}/{e}", junk_pdu),
        ("PUT", f"{F}/v2/send_join/{r}/{e}", "string"),
        ("PUT", f"{F}/v1/send_join/{r}/{e}", {}),
        ("PUT", f"{F}/v2/send_leave/{r}/{e}", {"hashes": 1, "signatures": {"x": 1}}),
        ("PUT", f"{F}/v1/send_knock/{r}/{e}", {}),
        ("PUT", f"{F}/v2/invite/{r}/{e}", {"room_version": "999", "event": {}}),
        ("PUT", f"{F}/v2/invite/{r}/{e}", {"room_version": 10, "event": "x"}),
        ("PUT", f"{F}/v2/invite/{r}/{e}", {"event": junk_pdu, "invite_room_state": "x"}),
        ("PUT", f"{F}/v1/invite/{r}/{e}", {"unsigned": "x"}),
        ("GET", f"{F}/v1/query/directory", None),
        ("GET", f"{F}/v1/query/directory?room_alias=nope", None),
        ("GET", f"{F}/v1/query/directory?room_alias=%23x%3Aelsewhere.example", None),
        ("GET", f"{F}/v1/query/profile?user_id=nope", None),
        ("GET", f"{F}/v1/query/profile?user_id={u}&field=bogus", None),
        ("GET", f"{F}/v1/publicRooms?limit=x", None),
        ("POST", f"{F}/v1/publicRooms", {"limit": "x", "filter": 3}),
        ("POST", "/_matrix/key/v2/query", {"server_keys": "x"}),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {"bad server": {}}}),
        ("GET", "/_matrix/key/v2/query/bad%20server", None),
    ]


async def test_junk_from_another_server_gets_matrix_errors() -> None:
    async with (
        fresh_tls() as tls,
        federated_server(tls, free_port()) as a,
        federated_server(tls, free_port()) as b,
    ):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        assert_ok(await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name}))
        event_id = await send_text(alice, room_id, "before")
        actor = ActingServer.of(b, tls)
        problems = []
        for method, path, body in _requests(room_id, bob.user_id, event_id):
            response = await actor.request(a, method, path, body)
            if response.status_code >= 500:
                problems.append((method, path, response.status_code, response.text))
            elif response.status_code >= 400:
                error = response.json()
                if not isinstance(error.get("errcode"), str):
                    problems.append((method, path, response.status_code, response.text))
        assert problems == []
        # Nothing of it broke the room.
        await send_text(alice, room_id, "after")
        await wait_for(lambda: _has(bob, room_id, "after"), "the next message on b")


async def _has(client: Any, room_id: str, body: str) -> bool:
    return body in await texts(client, room_id)
