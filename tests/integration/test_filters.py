"""Sync filters: POST /user/{userId}/filter and GET /user/{userId}/filter/{filterId}."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.client import Client, assert_error, assert_ok

FILTER: dict[str, Any] = {
    "event_fields": ["type", "content.body"],
    "event_format": "client",
    "presence": {"not_types": ["m.presence"]},
    "account_data": {"limit": 0},
    "room": {
        "rooms": ["!a:localhost"],
        "include_leave": False,
        "timeline": {"limit": 10, "lazy_load_members": True, "types": ["m.room.message"]},
        "state": {"lazy_load_members": True},
        "ephemeral": {"not_types": ["m.receipt"]},
        "org.example.extension": {"anything": [1, 2.5, None, "é"]},
    },
}


async def test_create_and_get_filter(alice: Client) -> None:
    body = assert_ok(await alice.post(f"/user/{alice.user_id}/filter", FILTER))
    filter_id = body["filter_id"]
    assert isinstance(filter_id, str)
    assert assert_ok(await alice.get(f"/user/{alice.user_id}/filter/{filter_id}")) == FILTER


async def test_filters_get_distinct_ids(alice: Client) -> None:
    ids = []
    for limit in range(3):
        body = {"room": {"timeline": {"limit": limit}}}
        ids.append(assert_ok(await alice.post(f"/user/{alice.user_id}/filter", body))["filter_id"])
    assert len(set(ids)) == 3
    for limit, filter_id in enumerate(ids):
        stored = assert_ok(await alice.get(f"/user/{alice.user_id}/filter/{filter_id}"))
        assert stored == {"room": {"timeline": {"limit": limit}}}


async def test_empty_filter(alice: Client) -> None:
    filter_id = assert_ok(await alice.post(f"/user/{alice.user_id}/filter", {}))["filter_id"]
    assert assert_ok(await alice.get(f"/user/{alice.user_id}/filter/{filter_id}")) == {}


async def test_percent_encoded_user_id(alice: Client) -> None:
    path = f"/user/{quote(alice.user_id, safe='')}/filter"
    filter_id = assert_ok(await alice.post(path, FILTER))["filter_id"]
    assert assert_ok(await alice.get(f"{path}/{filter_id}")) == FILTER


async def test_other_users_filters_are_forbidden(alice: Client, bob: Client) -> None:
    filter_id = assert_ok(await alice.post(f"/user/{alice.user_id}/filter", FILTER))["filter_id"]
    response = await bob.get(f"/user/{alice.user_id}/filter/{filter_id}")
    assert_error(response, 403, "M_FORBIDDEN")
    assert_error(await bob.post(f"/user/{alice.user_id}/filter", {}), 403, "M_FORBIDDEN")
    # Filter ids are per user: bob's filter with the same id is his own.
    bobs = assert_ok(await bob.post(f"/user/{bob.user_id}/filter", {"room": {}}))["filter_id"]
    assert assert_ok(await bob.get(f"/user/{bob.user_id}/filter/{bobs}")) == {"room": {}}
    assert assert_ok(await alice.get(f"/user/{alice.user_id}/filter/{filter_id}")) == FILTER


async def test_unknown_filter(alice: Client) -> None:
    assert_error(await alice.get(f"/user/{alice.user_id}/filter/12345"), 404, "M_NOT_FOUND")


# "%C2%B2" is a superscript two and "%D9%A1" an Arabic-Indic one: digits to Python, not ids.
@pytest.mark.parametrize("filter_id", ["abc", "-1", "1.5", "%20", "%C2%B2", "%D9%A1"])
async def test_non_numeric_filter_id(alice: Client, filter_id: str) -> None:
    # Filter 0 and 1 exist, so a lenient parse would find one.
    assert_ok(await alice.post(f"/user/{alice.user_id}/filter", {}))
    assert_ok(await alice.post(f"/user/{alice.user_id}/filter", {}))
    response = await alice.get(f"/user/{alice.user_id}/filter/{filter_id}")
    assert_error(response, 400, "M_UNKNOWN")


@pytest.mark.parametrize(
    "bad",
    [
        {"room": {"timeline": {"limit": "x"}}},
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"timeline": {"limit": True}}},
        {"room": {"timeline": "x"}},
        {"room": {"rooms": "!a:localhost"}},
        {"room": {"not_rooms": [1]}},
        {"room": {"include_leave": "yes"}},
        {"room": {"state": {"lazy_load_members": 1}}},
        {"room": []},
        {"event_format": "bad"},
        {"event_fields": "type"},
        {"presence": {"types": "m.presence"}},
        {"account_data": {"senders": [None]}},
        # Spec "Filtering": rooms are room ids and senders user ids (SyTest 80torture/10filters).
        {"room": {"timeline": {"rooms": ["not_a_room_id"]}}},
        {"room": {"timeline": {"not_rooms": ["#alias:localhost"]}}},
        {"room": {"timeline": {"senders": ["not_a_sender_id"]}}},
        {"room": {"state": {"not_senders": ["alice"]}}},
        {"room": {"rooms": ["nope"]}},
        {"room": {"not_rooms": ["nope"]}},
        {"presence": {"senders": ["@"]}},
        {"account_data": {"not_senders": ["bob:localhost"]}},
    ],
)
async def test_invalid_filters_are_refused(alice: Client, bad: dict[str, Any]) -> None:
    assert_error(await alice.post(f"/user/{alice.user_id}/filter", bad), 400, "M_BAD_JSON")


async def test_filter_body_must_be_an_object(alice: Client) -> None:
    response = await alice.post(f"/user/{alice.user_id}/filter", [1])
    assert_error(response, 400, "M_BAD_JSON")


async def test_filters_need_a_token(alice: Client) -> None:
    response = await alice.http.post(f"/_matrix/client/v3/user/{alice.user_id}/filter", json={})
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_huge_filter_id_is_not_found(alice: Client) -> None:
    assert_ok(await alice.post(f"/user/{alice.user_id}/filter", {}))
    response = await alice.get(f"/user/{alice.user_id}/filter/{'9' * 30}")
    assert_error(response, 404, "M_NOT_FOUND")


@pytest.mark.parametrize(
    "bad",
    [
        {"room": {"timeline": {"senders": ["not_a_sender_id"]}}},
        {"room": {"rooms": ["not_a_room_id"]}},
        {"presence": {"not_senders": ["x"]}},
    ],
)
async def test_invalid_inline_sync_filters_are_refused(alice: Client, bad: dict[str, Any]) -> None:
    response = await alice.get("/sync", params={"filter": json.dumps(bad)})
    assert_error(response, 400, "M_BAD_JSON")


async def test_ids_in_filters_are_accepted(alice: Client) -> None:
    good = {
        "presence": {"senders": ["@bob:localhost"]},
        "room": {
            "not_rooms": ["!a:localhost"],
            "timeline": {"not_senders": ["@Old_Style:example.org:8448"], "rooms": ["!b:x"]},
        },
    }
    assert_ok(await alice.post(f"/user/{alice.user_id}/filter", good))
    assert_ok(await alice.get("/sync", params={"filter": json.dumps(good)}))


async def test_messages_filters_are_not_id_checked(alice: Client) -> None:
    # Like Synapse, /messages filters are not held to the id rules (only uploaded filters and
    # inline /sync filters are): a sender that is no user id simply matches nothing.
    room_id = assert_ok(await alice.post("/createRoom", {}))["room_id"]
    sloppy = json.dumps({"senders": ["alice"]})
    body = assert_ok(await alice.get(f"/rooms/{room_id}/messages", params={"filter": sloppy}))
    assert body["chunk"] == []
