"""What a server does with what another server sends it (issue 15): forged signatures and
events the auth rules refuse are rejected alone, the rest of the transaction goes on, and a
server that was down catches up when it is back."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from signedjson.key import generate_signing_key

from tests.integration.client import Client, assert_ok
from tests.integration.federation_forge import ActingServer
from tests.integration.federation_helpers import (
    FederatedServer,
    federated_server,
    free_port,
    fresh_tls,
    texts,
    wait_for,
)
from tests.integration.room_helpers import create_room, send_text


async def _shared_room(a: FederatedServer, b: FederatedServer) -> tuple[Client, Client, str]:
    alice = await a.user("alice")
    bob = await b.user("bob")
    room_id = await create_room(alice, preset="public_chat")
    assert_ok(await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name}))

    async def bob_on_a() -> bool:
        joined = assert_ok(await alice.get(f"/rooms/{room_id}/joined_members"))["joined"]
        return bob.user_id in joined

    await wait_for(bob_on_a, "bob's join on a")
    return alice, bob, room_id


async def _head_and_auth(
    actor: ActingServer, a: FederatedServer, alice: Client, room_id: str
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The room version, the latest PDU on `a`, and the state event ids by key."""
    latest = assert_ok(
        await alice.get(f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 1})
    )["chunk"][0]["event_id"]
    head = await actor.pdu(a, latest)
    response = await alice.get(f"/rooms/{room_id}/state")
    assert response.status_code == 200, response.text
    state: list[dict[str, Any]] = response.json()
    ids = {f"{e['type']}|{e['state_key']}": e["event_id"] for e in state}
    create = next(e for e in state if e["type"] == "m.room.create")
    version = create["content"].get("room_version", "1")
    return version, head, ids


def _auth_ids(version: str, ids: dict[str, str], sender: str) -> list[str]:
    keys = ["m.room.power_levels|", f"m.room.member|{sender}"]
    if version != "12":
        keys.insert(0, "m.room.create|")
    return [ids[k] for k in keys]


async def test_a_forged_signature_is_rejected_and_the_rest_of_the_transaction_kept() -> None:
    async with (
        fresh_tls() as tls,
        federated_server(tls, free_port()) as a,
        federated_server(tls, free_port()) as b,
    ):
        alice, bob, room_id = await _shared_room(a, b)
        actor = ActingServer.of(b, tls)
        version, head, ids = await _head_and_auth(actor, a, alice, room_id)
        stranger = ActingServer(b.name, generate_signing_key("forged"), tls)
        common: dict[str, Any] = {
            "room_id": room_id,
            "sender": bob.user_id,
            "event_type": "m.room.message",
            "prev": head,
            "auth_event_ids": _auth_ids(version, ids, bob.user_id),
        }
        forged = stranger.event(version, content={"body": "forged"}, **common)
        genuine = actor.event(version, content={"body": "genuine"}, **common)
        answer = await actor.send(a, [forged.get_pdu_json(), genuine.get_pdu_json()])
        assert "error" in answer["pdus"][forged.event_id]
        assert answer["pdus"][genuine.event_id] == {}
        seen = await texts(alice, room_id)
        assert "genuine" in seen
        assert "forged" not in seen


async def test_an_event_the_auth_rules_refuse_is_rejected() -> None:
    async with (
        fresh_tls() as tls,
        federated_server(tls, free_port()) as a,
        federated_server(tls, free_port()) as b,
    ):
        alice, bob, room_id = await _shared_room(a, b)
        actor = ActingServer.of(b, tls)
        version, head, ids = await _head_and_auth(actor, a, alice, room_id)
        power = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.power_levels"))
        grab = {**power, "users": {**power.get("users", {}), bob.user_id: 100}}
        coup = actor.event(
            version,
            room_id=room_id,
            sender=bob.user_id,
            event_type="m.room.power_levels",
            state_key="",
            content=grab,
            prev=head,
            auth_event_ids=_auth_ids(version, ids, bob.user_id),
        )
        # Taken, and stored as rejected ({} in the answer, as Synapse answers): the state
        # and the timeline are as before.
        answer = await actor.send(a, [coup.get_pdu_json()])
        assert answer["pdus"][coup.event_id] == {}
        after = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.power_levels"))
        assert after == power
        timeline = assert_ok(
            await alice.get(f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 20})
        )
        assert coup.event_id not in [e["event_id"] for e in timeline["chunk"]]
        fetched = await alice.get(f"/rooms/{room_id}/event/{quote(coup.event_id)}")
        assert fetched.status_code == 404
        # A PDU that is not an event at all, or names a room this server is not in,
        # is answered with an error too; nothing fails as a whole.
        junk = {"room_id": "!nowhere:" + b.name, "type": "m.room.message"}
        answer = await actor.send(a, [junk, {"room_id": room_id}])
        assert all("error" in result for result in answer["pdus"].values())
        # The room goes on working.
        await send_text(alice, room_id, "still here")
        await wait_for(lambda: _has(bob, room_id, "still here"), "the next message")


async def _has(client: Client, room_id: str, body: str) -> bool:
    return body in await texts(client, room_id)


async def test_a_server_that_was_down_catches_up(tmp_path: Any) -> None:
    async with fresh_tls() as tls, federated_server(tls, free_port()) as a:
        port_b = free_port()
        data_b = tmp_path / "b"
        data_b.mkdir()
        async with federated_server(tls, port_b, data_b) as b:
            alice, bob, room_id = await _shared_room(a, b)
            bob_token = (bob.user_id, bob.token, bob.device_id)
        # b is down: a's messages cannot reach it.
        for n in range(3):
            await send_text(alice, room_id, f"while b was down {n}")
        async with federated_server(tls, port_b, data_b) as b:
            bob = Client(b.http, *bob_token)
            # b speaks first (bob writes); a then sends what b missed, and b fetches the
            # gap before it (get_missing_events).
            await send_text(bob, room_id, "b is back")
            wanted = [f"while b was down {n}" for n in range(3)]

            async def caught_up() -> bool:
                seen = await texts(bob, room_id)
                return all(w in seen for w in wanted)

            await wait_for(caught_up, "b catching up", seconds=60)
            await wait_for(lambda: _has(alice, room_id, "b is back"), "b's message on a")


async def test_a_long_gap_is_bridged_with_the_state_before_it(tmp_path: Any) -> None:
    # More events missed than /get_missing_events returns (10): the oldest of those fetched
    # is placed on the state the other server gives for its missing prev_event.
    async with fresh_tls() as tls, federated_server(tls, free_port()) as a:
        port_b = free_port()
        data_b = tmp_path / "b"
        data_b.mkdir()
        async with federated_server(tls, port_b, data_b) as b:
            alice, bob, room_id = await _shared_room(a, b)
            bob_token = (bob.user_id, bob.token, bob.device_id)
        for n in range(14):
            await send_text(alice, room_id, f"missed {n}")
        assert_ok(await alice.put(f"/rooms/{room_id}/state/m.room.topic", {"topic": "later"}))
        async with federated_server(tls, port_b, data_b) as b:
            bob = Client(b.http, *bob_token)
            await send_text(bob, room_id, "b is back")
            recent = [f"missed {n}" for n in range(5, 14)]

            async def bridged() -> bool:
                seen = await texts(bob, room_id)
                return all(w in seen for w in recent)

            await wait_for(bridged, "b bridging the gap", seconds=60)
            topic = assert_ok(await bob.get(f"/rooms/{room_id}/state/m.room.topic"))
            assert topic == {"topic": "later"}
            # The room goes on: b's next message reaches a.
            await send_text(bob, room_id, "after the gap")
            await wait_for(lambda: _has(alice, room_id, "after the gap"), "b's next message")


async def test_an_invite_is_rejected_even_when_the_inviting_server_is_gone() -> None:
    async with fresh_tls() as tls, federated_server(tls, free_port()) as b:
        bob = await b.user("bob")
        async with federated_server(tls, free_port()) as a:
            alice = await a.user("alice")
            room_id = await create_room(alice, preset="private_chat")
            assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

            async def invited() -> bool:
                sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
                return room_id in sync["rooms"].get("invite", {})

            await wait_for(invited, "the invite on b")
        # a is gone: bob still says no, and his next sync shows the room left.
        since = assert_ok(await bob.get("/sync", params={"timeout": 0}))["next_batch"]
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/leave", {}))
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0, "since": since}))
        left = sync["rooms"]["leave"][room_id]["timeline"]["events"]
        assert [(e["type"], e["content"]["membership"]) for e in left] == [
            ("m.room.member", "leave")
        ]
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        assert room_id not in sync["rooms"].get("invite", {})


async def test_an_invite_the_invitees_server_refuses_is_not_stored() -> None:
    # The invitee's server countersigns an invite before it is stored; one that refuses
    # (here: it federates only with another domain) leaves the room as it was.
    async with (
        fresh_tls() as tls,
        federated_server(tls, free_port()) as a,
        federated_server(
            tls, free_port(), federation={"domain_whitelist": ["nothing.example"]}
        ) as b,
    ):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat")
        response = await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id})
        assert response.status_code == 403, response.text
        assert response.json()["errcode"] == "M_FORBIDDEN"
        member = await alice.get(f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
        assert member.status_code == 404
