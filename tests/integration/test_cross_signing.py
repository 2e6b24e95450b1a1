"""Cross-signing over HTTP: /keys/device_signing/upload and /keys/signatures/upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signedjson.sign import sign_json

from tests.integration.client import Client, assert_error, assert_ok, assert_uia
from tests.integration.e2ee_helpers import CrossSigning, Device, public_key, served_env
from tests.integration.room_helpers import create_room, join

UPLOAD = "/keys/device_signing/upload"


async def query(client: Client, *user_ids: str) -> dict[str, Any]:
    body: dict[str, Any] = {"device_keys": {user_id: [] for user_id in user_ids}}
    return assert_ok(await client.post("/keys/query", body))


async def setup_cross_signing(client: Client) -> CrossSigning:
    keys = CrossSigning(client.user_id)
    assert_ok(await client.post(UPLOAD, keys.upload_body()))
    return keys


async def sign_upload(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    return assert_ok(await client.post("/keys/signatures/upload", body))


async def test_first_upload_needs_no_uia_and_is_visible(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        keys = await setup_cross_signing(alice)
        mine = await query(alice, alice.user_id)
        assert mine["master_keys"] == {alice.user_id: keys.key_object("master")}
        assert mine["self_signing_keys"] == {alice.user_id: keys.key_object("self_signing")}
        assert mine["user_signing_keys"] == {alice.user_id: keys.key_object("user_signing")}
        # Others see the master and self-signing keys, never the user-signing key.
        theirs = await query(bob, alice.user_id)
        assert theirs["master_keys"] == mine["master_keys"]
        assert theirs["self_signing_keys"] == mine["self_signing_keys"]
        assert theirs["user_signing_keys"] == {}


async def test_replacing_keys_needs_the_password(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        keys = await setup_cross_signing(alice)
        before = srv.deps.e2e_keys.position()
        # Repeating the same upload (e.g. after a lost response) succeeds without UIA.
        assert_ok(await alice.post(UPLOAD, keys.upload_body()))
        assert_ok(await alice.post(UPLOAD, {"master_key": keys.key_object("master")}))
        assert_ok(await alice.post(UPLOAD, {}))
        assert srv.deps.e2e_keys.position() == before
        new = CrossSigning(alice.user_id)
        first = await alice.post(UPLOAD, new.upload_body())
        assert_uia(first, ["m.login.password"])
        response = await alice.with_password_uia("POST", UPLOAD, new.upload_body(), "pw")
        assert_ok(response)
        mine = await query(alice, alice.user_id)
        assert mine["master_keys"][alice.user_id] == new.key_object("master")
        # A wrong password does not replace the keys.
        newer = CrossSigning(alice.user_id)
        session = assert_uia(await alice.post(UPLOAD, newer.upload_body()), ["m.login.password"])
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": "wrong",
            "session": session["session"],
        }
        response = await alice.post(UPLOAD, {**newer.upload_body(), "auth": auth})
        assert response.status_code == 401
        mine = await query(alice, alice.user_id)
        assert mine["master_keys"][alice.user_id] == new.key_object("master")


async def test_self_signing_key_alone_is_checked_against_the_stored_master(
    tmp_path: Path,
) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        keys = CrossSigning(alice.user_id)
        # No master key anywhere.
        response = await alice.post(UPLOAD, {"self_signing_key": keys.key_object("self_signing")})
        assert_error(response, 400, "M_MISSING_PARAM")
        assert_ok(await alice.post(UPLOAD, {"master_key": keys.key_object("master")}))
        body = {"self_signing_key": keys.key_object("self_signing")}
        response = await alice.with_password_uia("POST", UPLOAD, body, "pw")
        assert_ok(response)


async def test_invalid_uploads(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        keys = CrossSigning(alice.user_id)
        master = keys.key_object("master")
        unsigned = keys.key_object("self_signing", signed_by_master=False)
        stranger = CrossSigning(alice.user_id)
        signed_by_other = sign_json(
            keys.key_object("self_signing", signed_by_master=False), alice.user_id, stranger.master
        )
        cases: list[tuple[dict[str, Any], str]] = [
            ({"master_key": {**master, "user_id": "@bob:blue"}}, "M_INVALID_PARAM"),
            ({"master_key": {**master, "usage": ["self_signing"]}}, "M_INVALID_PARAM"),
            ({"master_key": {**master, "keys": {}}}, "M_INVALID_PARAM"),
            ({"master_key": {**master, "keys": {"curve25519:x": "x"}}}, "M_INVALID_PARAM"),
            ({"master_key": {**master, "keys": {"ed25519:x": "!!"}}}, "M_INVALID_PARAM"),
            ({"master_key": "nope"}, "M_INVALID_PARAM"),
            ({"master_key": master, "self_signing_key": unsigned}, "M_INVALID_SIGNATURE"),
            ({"master_key": master, "self_signing_key": signed_by_other}, "M_INVALID_SIGNATURE"),
        ]
        for body, errcode in cases:
            assert_error(await alice.post(UPLOAD, body), 400, errcode)
        assert srv.env.query("SELECT COUNT(*) FROM e2e_cross_signing_keys") == [(0,)]


async def test_public_key_may_not_equal_a_device_id(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        keys = CrossSigning(alice.user_id)
        await srv.client("alice", public_key(keys.master))
        assert_error(await alice.post(UPLOAD, keys.upload_body()), 403, "M_FORBIDDEN")


async def test_signing_own_device_and_master_key(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "ADEV"))
        bob = await srv.client("bob")
        room_id = await create_room(alice.client, preset="public_chat")
        await join(bob, room_id)
        user = alice.client.user_id
        await alice.upload(device_keys=alice.device_keys())
        keys = await setup_cross_signing(alice.client)
        handler, before = srv.deps.e2e_keys, srv.deps.e2e_keys.position()
        signed_device = sign_json(alice.device_keys(), user, keys.self_signing)
        signed_master = sign_json(keys.key_object("master"), user, alice.signing_key)
        master_id = public_key(keys.master)
        result = await sign_upload(
            alice.client, {user: {"ADEV": signed_device, master_id: signed_master}}
        )
        assert result == {"failures": {}}
        seen = await query(bob, user)
        ssk_id = f"ed25519:{public_key(keys.self_signing)}"
        device_sigs = seen["device_keys"][user]["ADEV"]["signatures"][user]
        assert device_sigs[ssk_id] == signed_device["signatures"][user][ssk_id]
        master_sigs = seen["master_keys"][user]["signatures"][user]
        assert master_sigs["ed25519:ADEV"] == signed_master["signatures"][user]["ed25519:ADEV"]
        after = handler.position()
        assert await handler.changed_since(bob.user_id, before, after) == {user}


async def test_bad_own_signatures_are_failures(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "ADEV"))
        user = alice.client.user_id
        await alice.upload(device_keys=alice.device_keys())
        # Without cross-signing keys, a device signature cannot be checked.
        unsigned = await sign_upload(alice.client, {user: {"ADEV": alice.device_keys()}})
        assert unsigned["failures"][user]["ADEV"]["errcode"] == "M_NOT_FOUND"
        keys = await setup_cross_signing(alice.client)
        forged = sign_json(alice.device_keys(), user, CrossSigning(user).self_signing)
        changed = sign_json({**alice.device_keys(), "algorithms": []}, user, keys.self_signing)
        ghost = sign_json({**alice.device_keys(), "device_id": "GHOST"}, user, keys.self_signing)
        bad_master = sign_json(keys.key_object("master"), user, Device(alice.client).signing_key)
        body = {
            user: {
                "ADEV": forged,
                "GHOST": ghost,
                public_key(keys.master): {**bad_master},
            }
        }
        result = await sign_upload(alice.client, body)
        failures = result["failures"][user]
        assert failures["ADEV"]["errcode"] == "M_INVALID_SIGNATURE"
        assert failures["GHOST"]["errcode"] == "M_NOT_FOUND"
        assert failures[public_key(keys.master)]["errcode"] == "M_INVALID_SIGNATURE"
        result = await sign_upload(alice.client, {user: {"ADEV": changed}})
        assert result["failures"][user]["ADEV"]["status"] == 400
        assert srv.env.query("SELECT COUNT(*) FROM e2e_cross_signing_signatures") == [(0,)]
        bad_bodies: list[dict[str, Any]] = [{user: []}, {user: {"ADEV": "x"}}]
        for bad_body in bad_bodies:
            response = await alice.client.post("/keys/signatures/upload", bad_body)
            assert_error(response, 400, "M_INVALID_PARAM")


async def test_signing_another_users_master_key(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        carol = await srv.client("carol")
        alice_keys = await setup_cross_signing(alice)
        bob_keys = await setup_cross_signing(bob)
        before = srv.deps.e2e_keys.position()
        bob_master = public_key(bob_keys.master)
        signed = sign_json(bob_keys.key_object("master"), alice.user_id, alice_keys.user_signing)
        result = await sign_upload(alice, {bob.user_id: {bob_master: signed, "OTHERKEY": signed}})
        assert list(result["failures"]) == [bob.user_id]
        assert list(result["failures"][bob.user_id]) == ["OTHERKEY"]
        usk_id = f"ed25519:{public_key(alice_keys.user_signing)}"
        # Alice sees her signature of bob's master key; bob and carol do not.
        for reader, visible in ((alice, True), (bob, False), (carol, False)):
            master = (await query(reader, bob.user_id))["master_keys"][bob.user_id]
            assert (usk_id in master.get("signatures", {}).get(alice.user_id, {})) is visible
        # Only alice hears of the change.
        after = srv.deps.e2e_keys.position()
        handler = srv.deps.e2e_keys
        assert await handler.changed_since(alice.user_id, before, after) == {bob.user_id}
        assert await handler.changed_since(bob.user_id, before, after) == set()


async def test_signing_others_without_keys_fails(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        bob_keys = await setup_cross_signing(bob)
        bob_master = public_key(bob_keys.master)
        body = {bob.user_id: {bob_master: bob_keys.key_object("master")}}
        result = await sign_upload(alice, body)
        assert result["failures"][bob.user_id][bob_master]["errcode"] == "M_NOT_FOUND"
        alice_keys = await setup_cross_signing(alice)
        signed = sign_json({"user_id": "@nobody:blue"}, alice.user_id, alice_keys.user_signing)
        result = await sign_upload(alice, {"@nobody:blue": {"X": signed}})
        assert result["failures"]["@nobody:blue"]["X"]["errcode"] == "M_NOT_FOUND"
