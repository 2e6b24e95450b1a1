"""Third-party invites are refused with 403 M_FORBIDDEN wherever a client can make one."""

from __future__ import annotations

from tests.integration.client import Client, assert_error
from tests.integration.room_helpers import create_room

THREEPID = {"id_server": "id.example.org", "medium": "email", "address": "a@example.org"}


async def test_invite_by_third_party_identifier_is_refused(alice: Client) -> None:
    room_id = await create_room(alice)
    response = await alice.post(f"/rooms/{room_id}/invite", THREEPID)
    assert_error(response, 403, "M_FORBIDDEN")


async def test_create_room_with_invite_3pid_is_refused(alice: Client) -> None:
    response = await alice.post("/createRoom", {"invite_3pid": [THREEPID]})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_third_party_invite_state_events_are_refused(alice: Client) -> None:
    room_id = await create_room(alice)
    content = {"display_name": "a...", "key_validity_url": "https://x", "public_key": "abc"}
    response = await alice.put(f"/rooms/{room_id}/state/m.room.third_party_invite/token", content)
    assert_error(response, 403, "M_FORBIDDEN")
    claim = {"membership": "invite", "third_party_invite": {"signed": {"token": "token"}}}
    response = await alice.put(f"/rooms/{room_id}/state/m.room.member/@x:localhost", claim)
    assert_error(response, 403, "M_FORBIDDEN")
