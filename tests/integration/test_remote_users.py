"""Requests that name a user (or alias/room) of another server that does not exist: each gets
a Matrix error (or a valid answer where the spec allows one), never a 500. Where the request
needs that server (joining through it, resolving its alias), 502 says it could not be reached,
as Synapse answers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room

REMOTE = "@x:remote.example"
R = quote(REMOTE)


def _problem(response: Any) -> str | None:
    """Why a response is not acceptable, or None: no 5xx, and errors are Matrix errors."""
    if response.status_code >= 500 and response.status_code != 502:
        return f"{response.status_code} {response.text}"
    if response.status_code >= 400:
        body = response.json()
        if not isinstance(body.get("errcode"), str) or not isinstance(body.get("error"), str):
            return f"not a Matrix error: {response.status_code} {response.text}"
    return None


def _requests(room_id: str) -> list[tuple[str, str, Any]]:
    member = f"/rooms/{room_id}/state/m.room.member/{R}"
    return [
        *[("PUT", member, {"membership": m}) for m in ("join", "invite", "leave", "knock")],
        ("PUT", member, {"membership": "ban"}),
        ("PUT", member, {"membership": "leave"}),
        ("PUT", member, {"membership": "bogus"}),
        ("PUT", member, {}),
        ("POST", f"/rooms/{room_id}/invite", {"user_id": REMOTE}),
        ("POST", f"/rooms/{room_id}/kick", {"user_id": REMOTE}),
        ("POST", f"/rooms/{room_id}/ban", {"user_id": REMOTE}),
        ("POST", f"/rooms/{room_id}/unban", {"user_id": REMOTE}),
        ("GET", f"/rooms/{room_id}/state/m.room.member/{R}", None),
        ("POST", "/createRoom", {"invite": [REMOTE]}),
        ("GET", f"/profile/{R}", None),
        ("GET", f"/profile/{R}/displayname", None),
        ("GET", f"/profile/{R}/avatar_url", None),
        ("PUT", f"/profile/{R}/displayname", {"displayname": "x"}),
        ("DELETE", f"/profile/{R}/displayname", None),
        ("GET", f"/presence/{R}/status", None),
        ("PUT", f"/presence/{R}/status", {"presence": "online"}),
        ("PUT", f"/rooms/{room_id}/typing/{R}", {"typing": True, "timeout": 1000}),
        ("GET", f"/user/{R}/account_data/m.test", None),
        ("PUT", f"/user/{R}/account_data/m.test", {"a": 1}),
        ("GET", f"/user/{R}/rooms/{room_id}/account_data/m.test", None),
        ("PUT", f"/user/{R}/rooms/{room_id}/account_data/m.test", {"a": 1}),
        ("GET", f"/user/{R}/rooms/{room_id}/tags", None),
        ("PUT", f"/user/{R}/rooms/{room_id}/tags/u.t", {}),
        ("DELETE", f"/user/{R}/rooms/{room_id}/tags/u.t", None),
        ("POST", f"/user/{R}/filter", {}),
        ("GET", f"/user/{R}/filter/0", None),
        ("POST", "/keys/query", {"device_keys": {REMOTE: []}}),
        ("POST", "/keys/query", {"device_keys": {REMOTE: ["DEV"]}}),
        ("POST", "/keys/claim", {"one_time_keys": {REMOTE: {"DEV": "signed_curve25519"}}}),
        ("PUT", "/sendToDevice/m.test/t1", {"messages": {REMOTE: {"*": {"a": 1}}}}),
        ("PUT", "/sendToDevice/m.test/t2", {"messages": {REMOTE: {"DEV": {"a": 1}}}}),
        ("POST", "/user_directory/search", {"search_term": REMOTE}),
        ("POST", "/keys/signatures/upload", {REMOTE: {"DEV": {"user_id": REMOTE}}}),
        ("POST", "/login", {"type": "m.login.password", "user": REMOTE, "password": "x"}),
        ("GET", f"/directory/room/{quote('#a:remote.example')}", None),
        ("PUT", f"/directory/room/{quote('#a:remote.example')}", {"room_id": room_id}),
        ("DELETE", f"/directory/room/{quote('#a:remote.example')}", None),
        ("POST", f"/join/{quote('#a:remote.example')}", {}),
        ("POST", f"/join/{quote('!r:remote.example')}", {}),
        ("POST", f"/knock/{quote('!r:remote.example')}", {}),
        ("POST", f"/rooms/{quote('!r:remote.example')}/leave", {}),
        ("GET", f"/rooms/{quote('!r:remote.example')}/messages", None),
        ("GET", f"/rooms/{quote('!r:remote.example')}/state", None),
        ("PUT", f"/rooms/{room_id}/state/m.room.power_levels", {"users": {REMOTE: 50}}),
        (
            "PUT",
            "/user/@alice:localhost/account_data/m.ignored_user_list",
            {"ignored_users": {REMOTE: {}}},
        ),
        ("GET", "/sync?timeout=0", None),
        ("POST", f"/user/{R}/openid/request_token", {}),
        ("GET", "/register/available?username=x:remote.example", None),
        ("POST", "/keys/upload", {"device_keys": {"user_id": REMOTE, "device_id": "D"}}),
        ("POST", f"/rooms/{room_id}/read_markers", {"m.fully_read": "$x:remote.example"}),
        ("GET", f"/rooms/{room_id}/members", None),
        ("GET", f"/rooms/{room_id}/joined_members", None),
    ]


async def test_requests_naming_remote_users_get_matrix_errors(alice: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    problems = []
    for method, path, body in _requests(room_id):
        response = await alice.http.request(
            method, f"/_matrix/client/v3{path}", json=body, headers=alice.headers
        )
        problem = _problem(response)
        if problem is not None:
            problems.append((method, path, body, problem))
    assert problems == []
    # The room still works afterwards.
    assert_ok(await alice.get(f"/rooms/{room_id}/state"))


@pytest.mark.parametrize("membership", ["join", "knock"])
async def test_setting_someone_elses_join_is_forbidden(alice: Client, membership: str) -> None:
    room_id = await create_room(alice, preset="public_chat")
    path = f"/rooms/{room_id}/state/m.room.member/{R}"
    assert_error(await alice.put(path, {"membership": membership}), 403, "M_FORBIDDEN")


async def test_inviting_a_remote_user_needs_federation() -> None:
    async with serve_in_process(federation={"enabled": False}) as hs:
        user = await hs.register_user("alice", "alicepw")
        async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http:
            alice = Client(http, user.user_id, user.access_token, user.device_id)
            room_id = await create_room(alice)
            response = await alice.post(f"/rooms/{room_id}/invite", {"user_id": REMOTE})
            body = assert_error(response, 403, "M_FORBIDDEN")
            assert "federation" in body["error"]
            response = await alice.post("/createRoom", {"invite": [REMOTE]})
            assert "federation" in assert_error(response, 403, "M_FORBIDDEN")["error"]


async def test_banning_a_remote_user_works(alice: Client) -> None:
    room_id = await create_room(alice)
    assert_ok(await alice.post(f"/rooms/{room_id}/ban", {"user_id": REMOTE}))
    member = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.member/{R}"))
    assert member == {"membership": "ban"}
    assert_ok(await alice.post(f"/rooms/{room_id}/unban", {"user_id": REMOTE}))


async def test_keys_query_reports_remote_servers_as_failures(alice: Client) -> None:
    body = assert_ok(await alice.post("/keys/query", {"device_keys": {REMOTE: []}}))
    assert body["device_keys"].get(REMOTE, {}) == {}
    assert "remote.example" in body["failures"]
    claim = {"one_time_keys": {REMOTE: {"DEV": "signed_curve25519"}}}
    body = assert_ok(await alice.post("/keys/claim", claim))
    assert body["one_time_keys"].get(REMOTE, {}) == {}
    assert "remote.example" in body["failures"]


async def test_inviting_a_malformed_user_id_is_a_bad_request(alice: Client) -> None:
    room_id = await create_room(alice)
    response = await alice.post(f"/rooms/{room_id}/invite", {"user_id": "not-a-user"})
    assert_error(response, 400, "M_INVALID_PARAM")
