"""End-to-end keys over HTTP: upload, query, claim, and device-list changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.e2ee_helpers import Device, ServedEnv, served_env
from tests.integration.room_helpers import create_room, join, leave


async def query(client: Client, device_keys: dict[str, list[str]]) -> dict[str, Any]:
    return assert_ok(await client.post("/keys/query", {"device_keys": device_keys}))


async def claim(client: Client, one_time_keys: dict[str, dict[str, str]]) -> dict[str, Any]:
    return assert_ok(await client.post("/keys/claim", {"one_time_keys": one_time_keys}))


async def test_upload_and_query_device_keys(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "ALICEDEV"))
        bob = await srv.client("bob")
        assert_ok(await alice.client.put("/devices/ALICEDEV", {"display_name": "Alice's phone"}))
        keys = alice.device_keys()
        body = await alice.upload(device_keys=keys)
        assert body == {"one_time_key_counts": {"signed_curve25519": 0}}
        result = await query(bob, {alice.client.user_id: []})
        expected = {**keys, "unsigned": {"device_display_name": "Alice's phone"}}
        assert result["device_keys"] == {alice.client.user_id: {"ALICEDEV": expected}}
        assert result["failures"] == {}
        assert result["master_keys"] == {}
        # By device id: known, unknown.
        result = await query(bob, {alice.client.user_id: ["ALICEDEV", "NOPE"]})
        assert list(result["device_keys"][alice.client.user_id]) == ["ALICEDEV"]


async def test_query_unknown_remote_and_invalid_users(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        bob = await srv.client("bob")
        result = await query(
            bob, {"@nobody:blue": [], "@carol:remote.example": ["X"], "not-a-user": []}
        )
        assert result["device_keys"] == {"@nobody:blue": {}}
        assert list(result["failures"]) == ["remote.example"]
        # A device without uploaded keys is not listed.
        result = await query(bob, {bob.user_id: []})
        assert result["device_keys"] == {bob.user_id: {}}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"device_keys": []}, "M_INVALID_PARAM"),
        ({"device_keys": {"@a:blue": "DEV"}}, "M_INVALID_PARAM"),
        ({"device_keys": {"@a:blue": [1]}}, "M_INVALID_PARAM"),
    ],
)
async def test_query_bad_bodies(tmp_path: Path, body: dict[str, Any], errcode: str) -> None:
    async with served_env(tmp_path) as srv:
        bob = await srv.client("bob")
        assert_error(await bob.post("/keys/query", body), 400, errcode)


async def test_upload_must_match_the_requester(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "DEV1"))
        keys = alice.device_keys()
        for wrong in ({"user_id": "@bob:blue"}, {"device_id": "OTHER"}):
            response = await alice.client.post("/keys/upload", {"device_keys": {**keys, **wrong}})
            assert_error(response, 400, "M_BAD_JSON")
        broken_bodies: list[dict[str, Any]] = [
            {"device_keys": None},
            {"device_keys": {**keys, "keys": {"ed25519:DEV1": 5}}},
            {"device_keys": {**keys, "algorithms": "x"}},
            {"device_keys": {k: v for k, v in keys.items() if k != "signatures"}},
            {"one_time_keys": {"no_colon": "k"}},
            {"one_time_keys": {"a:b:c": "k"}},
            {"one_time_keys": {"signed_curve25519:A": {"key": "k"}}},
            {"one_time_keys": {"curve25519:A": 7}},
            {"fallback_keys": []},
        ]
        for broken in broken_bodies:
            assert_error(await alice.client.post("/keys/upload", broken), 400, "M_BAD_JSON")
        two_fallbacks = {"fallback_keys": {"curve25519:A": "a", "curve25519:B": "b"}}
        response = await alice.client.post("/keys/upload", two_fallbacks)
        assert_error(response, 400, "M_INVALID_PARAM")
        # Nothing was stored by the failed uploads.
        assert srv.env.query("SELECT COUNT(*) FROM e2e_device_keys") == [(0,)]


async def test_one_time_keys_are_claimed_once_oldest_first(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "DEV"))
        bob = await srv.client("bob")
        first = {"signed_curve25519:AAAA": alice.one_time_key("k1")}
        counts = await alice.upload(device_keys=alice.device_keys(), one_time_keys=first)
        assert counts == {"one_time_key_counts": {"signed_curve25519": 1}}
        later = {"signed_curve25519:BBBB": alice.one_time_key("k2"), "curve25519:CCCC": "k3"}
        counts = await alice.upload(one_time_keys=later)
        assert counts["one_time_key_counts"] == {"signed_curve25519": 2, "curve25519": 1}
        # Re-uploading a key is fine; the same id with another key is not.
        await alice.upload(one_time_keys=first)
        response = await alice.client.post(
            "/keys/upload", {"one_time_keys": {"signed_curve25519:AAAA": alice.one_time_key("x")}}
        )
        assert_error(response, 400, "M_UNKNOWN")
        user = alice.client.user_id
        result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
        assert result == {"one_time_keys": {user: {"DEV": first}}, "failures": {}}
        result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
        assert result["one_time_keys"] == {
            user: {"DEV": {"signed_curve25519:BBBB": later["signed_curve25519:BBBB"]}}
        }
        result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
        assert result["one_time_keys"] == {}
        assert await srv.deps.e2e_keys.one_time_key_counts(user, "DEV") == {
            "signed_curve25519": 0,
            "curve25519": 1,
        }


async def test_fallback_keys(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "DEV"))
        bob = await srv.client("bob")
        user, handler = alice.client.user_id, srv.deps.e2e_keys
        fallback = {"signed_curve25519:FB1": alice.one_time_key("fb1", fallback=True)}
        otk = {"signed_curve25519:OTK1": alice.one_time_key("o1")}
        await alice.upload(fallback_keys=fallback, one_time_keys=otk)
        assert await handler.unused_fallback_key_types(user, "DEV") == ["signed_curve25519"]
        # A one-time key is preferred; the fallback key is used only once they run out.
        result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
        assert result["one_time_keys"] == {user: {"DEV": otk}}
        assert await handler.unused_fallback_key_types(user, "DEV") == ["signed_curve25519"]
        for _ in range(2):
            result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
            assert result["one_time_keys"] == {user: {"DEV": fallback}}
        assert await handler.unused_fallback_key_types(user, "DEV") == []
        # Uploading the same fallback key again does not make it unused.
        await alice.upload(fallback_keys=fallback)
        assert await handler.unused_fallback_key_types(user, "DEV") == []
        replacement = {"signed_curve25519:FB2": alice.one_time_key("fb2", fallback=True)}
        await alice.upload(fallback_keys=replacement)
        assert await handler.unused_fallback_key_types(user, "DEV") == ["signed_curve25519"]
        result = await claim(bob, {user: {"DEV": "signed_curve25519"}})
        assert result["one_time_keys"] == {user: {"DEV": replacement}}


async def test_claim_unknown_remote_and_bad_bodies(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        bob = await srv.client("bob")
        result = await claim(
            bob,
            {
                "@nobody:blue": {"DEV": "signed_curve25519"},
                bob.user_id: {"NODEVICE": "signed_curve25519"},
                "@carol:remote.example": {"DEV": "signed_curve25519"},
            },
        )
        assert result == {
            "one_time_keys": {},
            "failures": {"remote.example": result["failures"]["remote.example"]},
        }
        bodies: list[dict[str, Any]] = [
            {},
            {"one_time_keys": []},
            {"one_time_keys": {"@a:blue": {"D": 1}}},
        ]
        for body in bodies:
            response = await bob.post("/keys/claim", body)
            assert response.status_code == 400, response.text


async def test_deleted_devices_lose_their_keys(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "GOING"))
        keeper = Device(await srv.client("alice", "STAYING"))
        bob = await srv.client("bob")
        for device in (alice, keeper):
            await device.upload(
                device_keys=device.device_keys(),
                one_time_keys={"signed_curve25519:A": device.one_time_key("k")},
                fallback_keys={"signed_curve25519:F": device.one_time_key("f", fallback=True)},
            )
        assert_ok(await alice.client.post("/logout", {}))
        result = await query(bob, {alice.client.user_id: []})
        assert list(result["device_keys"][alice.client.user_id]) == ["STAYING"]
        for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
            assert srv.env.query(f"SELECT device_id FROM {table}") == [("STAYING",)]
        # Logging in with the old device id starts without keys.
        await srv.client("alice", "GOING")
        result = await query(bob, {alice.client.user_id: ["GOING"]})
        assert result["device_keys"] == {alice.client.user_id: {}}
        result = await claim(bob, {alice.client.user_id: {"GOING": "signed_curve25519"}})
        assert result["one_time_keys"] == {}


async def test_keys_of_all_devices_go_on_deactivation(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "DEV"))
        await alice.upload(device_keys=alice.device_keys())
        await srv.deps.accounts.deactivate(alice.client.user_id)
        assert srv.env.query("SELECT COUNT(*) FROM e2e_device_keys") == [(0,)]


async def _changes(client: Client, since: str, to: str | None = None) -> dict[str, Any]:
    params = {"from": since} if to is None else {"from": since, "to": to}
    return assert_ok(await client.get("/keys/changes", params=params))


def _token(srv: ServedEnv) -> str:
    return srv.deps.notifier.current_token().to_string()


async def test_device_list_changes_for_room_members(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "A1"))
        bob = await srv.client("bob")
        carol = await srv.client("carol")
        room_id = await create_room(alice.client, preset="public_chat")
        await join(bob, room_id)
        handler = srv.deps.e2e_keys
        since = srv.deps.notifier.current_token()
        await alice.upload(device_keys=alice.device_keys())
        now = srv.deps.notifier.current_token()
        assert now.device_lists > since.device_lists
        assert await handler.changed_since(bob.user_id, since.device_lists, now.device_lists) == {
            alice.client.user_id
        }
        # Alice hears of her own change; carol shares no room with her.
        assert alice.client.user_id in await handler.changed_since(
            alice.client.user_id, since.device_lists, now.device_lists
        )
        assert await handler.changed_since(
            carol.user_id, since.device_lists, now.device_lists
        ) == (set())
        assert await _changes(bob, since.to_string()) == {
            "changed": [alice.client.user_id],
            "left": [],
        }
        # Re-uploading identical keys is no change; a new device, a rename, a logout are.
        await alice.upload(device_keys=alice.device_keys())
        assert srv.deps.notifier.current_token().device_lists == now.device_lists
        for change in ("login", "rename", "logout"):
            before = srv.deps.notifier.current_token()
            if change == "login":
                second = await srv.client("alice", "A2")
            elif change == "rename":
                assert_ok(await second.put("/devices/A2", {"display_name": "laptop"}))
            else:
                assert_ok(await second.post("/logout", {}))
            after = srv.deps.notifier.current_token()
            assert await handler.changed_since(
                bob.user_id, before.device_lists, after.device_lists
            ) == {alice.client.user_id}, change


async def test_upload_wakes_room_members(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice"))
        bob = await srv.client("bob")
        carol = await srv.client("carol")
        room_id = await create_room(alice.client, preset="public_chat")
        await join(bob, room_id)
        notifier = srv.deps.notifier
        with notifier.listen(bob.user_id, []) as bob_wait, notifier.listen(carol.user_id, []) as c:
            await alice.upload(device_keys=alice.device_keys())
            assert await bob_wait.wait(5)
            assert not await c.wait(0.05)


async def test_keys_changes_newly_shared_and_left(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        room_id = await create_room(alice, preset="public_chat")
        since = _token(srv)
        await join(bob, room_id)
        # Bob now shares a room with alice: each sees the other as changed.
        assert await _changes(alice, since) == {"changed": [bob.user_id], "left": []}
        assert await _changes(bob, since) == {"changed": [alice.user_id], "left": []}
        middle = _token(srv)
        await leave(bob, room_id)
        assert await _changes(alice, middle) == {"changed": [], "left": [bob.user_id]}
        assert await _changes(bob, middle) == {"changed": [], "left": [alice.user_id]}
        # Over the whole range bob joined and left again: nothing to report.
        assert await _changes(alice, since) == {"changed": [], "left": []}
        # Still sharing another room: leaving one is not "left".
        other = await create_room(alice, preset="public_chat")
        await join(bob, other)
        await join(bob, room_id)
        before_leave = _token(srv)
        await leave(bob, room_id)
        assert await _changes(alice, before_leave) == {"changed": [], "left": []}
        # `to` bounds the range.
        assert await _changes(alice, since, to=since) == {"changed": [], "left": []}


async def test_keys_changes_errors(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        bob = await srv.client("bob")
        assert_error(await bob.get("/keys/changes"), 400, "M_MISSING_PARAM")
        for bad in ("nonsense", "s1_2", "t1-2"):
            assert_error(
                await bob.get("/keys/changes", params={"from": bad}), 400, "M_INVALID_PARAM"
            )
        since = _token(srv)
        response = await bob.get("/keys/changes", params={"from": since, "to": "x"})
        assert_error(response, 400, "M_INVALID_PARAM")
        response = await bob.http.get("/_matrix/client/v3/keys/changes", params={"from": since})
        assert_error(response, 401, "M_MISSING_TOKEN")


async def test_device_list_position_survives_restart(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = Device(await srv.client("alice", "DEV"))
        await alice.upload(device_keys=alice.device_keys())
        position = srv.deps.e2e_keys.position()
        assert position > 0
    async with served_env(tmp_path) as srv:
        assert srv.deps.e2e_keys.position() == position
        assert srv.deps.notifier.current_token().device_lists == position
