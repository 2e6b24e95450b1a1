"""POST /user_directory/search over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, leave, set_state


async def search(client: Client, term: str, **extra: Any) -> dict[str, Any]:
    body = {"search_term": term, **extra}
    return assert_ok(await client.post("/user_directory/search", body))


def ids(result: dict[str, Any]) -> list[str]:
    return [r["user_id"] for r in result["results"]]


async def test_users_sharing_a_private_room_are_found(alice: Client, bob: Client) -> None:
    assert await search(alice, "bob") == {"results": [], "limited": False}
    room_id = await create_room(alice, preset="private_chat")
    await invite(alice, room_id, bob.user_id)
    # An invitation is not enough.
    assert ids(await search(alice, "bob")) == []
    await join(bob, room_id)
    result = await search(alice, "bob")
    assert result == {
        "results": [{"user_id": bob.user_id, "display_name": "bob"}],
        "limited": False,
    }
    assert ids(await search(bob, "alice")) == [alice.user_id]
    # The requester does not find themselves through a private room.
    assert ids(await search(alice, "alice")) == []
    await leave(bob, room_id)
    assert ids(await search(alice, "bob")) == []


async def test_users_in_public_rooms_are_found_by_everyone(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    user = await hs.register_user("carol", "pw")
    carol = Client(alice.http, user.user_id, user.access_token, user.device_id)
    assert ids(await search(carol, "bob")) == [bob.user_id]
    # In a public room, the requester finds themselves too (as in Synapse).
    assert ids(await search(alice, "alice")) == [alice.user_id]


async def test_world_readable_rooms_count_as_public(hs: InProcessServer, alice: Client) -> None:
    room_id = await create_room(alice, preset="private_chat")
    user = await hs.register_user("carol", "pw")
    carol = Client(alice.http, user.user_id, user.access_token, user.device_id)
    assert ids(await search(carol, "alice")) == []
    await set_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    assert ids(await search(carol, "alice")) == [alice.user_id]


async def test_matching_is_by_word_prefix_and_case_insensitive(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    name = {"displayname": "Bobby Ölson-Tables"}
    assert_ok(await bob.put(f"/profile/{bob.user_id}/displayname", name))
    for term in ("BOB", "bobby", "ölson", "ÖLS", "tables", "bobby öl", f"{bob.user_id}", "@bob"):
        assert ids(await search(alice, term)) == [bob.user_id], term
    for term in ("obby", "bobby x", "son", "%", "_"):
        assert ids(await search(alice, term)) == [], term
    # Blank and punctuation-only terms match nobody.
    for term in ("", "   ", "!!"):
        assert ids(await search(alice, term)) == []
    avatar = {"avatar_url": "mxc://blue/abc"}
    assert_ok(await bob.put(f"/profile/{bob.user_id}/avatar_url", avatar))
    assert (await search(alice, "bob"))["results"] == [
        {"user_id": bob.user_id, "display_name": name["displayname"], **avatar}
    ]


async def test_limit_and_ranking(hs: InProcessServer, alice: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    for localpart in ("sam", "samantha", "samuel", "xsam"):
        user = await hs.register_user(localpart, "pw")
        await join(Client(alice.http, user.user_id, user.access_token, user.device_id), room_id)
    result = await search(alice, "sam", limit=2)
    assert result["limited"] is True
    # The exact match first.
    assert ids(result) == [f"@sam:{hs.server_name}", f"@samantha:{hs.server_name}"]
    result = await search(alice, "sam")
    assert result["limited"] is False
    assert len(result["results"]) == 3
    assert ids(await search(alice, "sam", limit=0)) == []
    assert (await search(alice, "sam", limit=0))["limited"] is True


async def test_deactivated_users_are_not_listed(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    assert ids(await search(alice, "bob")) == [bob.user_id]
    response = await bob.with_password_uia("POST", "/account/deactivate", {}, "bobpw")
    assert_ok(response)
    assert ids(await search(alice, "bob")) == []


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"search_term": 5}, "M_INVALID_PARAM"),
        ({"search_term": "a", "limit": "10"}, "M_INVALID_PARAM"),
        ({"search_term": "a", "limit": 1.5}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_requests(alice: Client, body: dict[str, Any], errcode: str) -> None:
    assert_error(await alice.post("/user_directory/search", body), 400, errcode)


async def test_requires_authentication(alice: Client) -> None:
    response = await alice.http.post(
        "/_matrix/client/v3/user_directory/search", json={"search_term": "a"}
    )
    assert_error(response, 401, "M_MISSING_TOKEN")
