"""Pushers over real HTTP: the pusher API, and delivery to a real push gateway on loopback.

SyTest: tests/61push/01message-pushed.pl, 06_get_pusher.pl, 08_rejected_pushers.pl and the
pusher tests of tests/14account/01change-password.pl.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import trio

from trioserver.config import config_from_mapping
from trioserver.errors import ConfigError
from trioserver.handlers.pushers import MAX_PUSHERS_PER_USER
from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.push_gateway import (
    FAIL,
    HANG,
    Answer,
    PushGateway,
    ok,
    open_push_gateway,
)
from tests.integration.room_helpers import create_room, invite, join, send_text, set_state

# Short pauses so that retry tests take milliseconds, not seconds.
FAST_PUSH: dict[str, Any] = {
    "initial_backoff": 0.05,
    "max_backoff": 0.2,
    "timeout": 5.0,
    # The test gateways are on loopback, which pushers may not reach by default.
    "ip_range_allowlist": ["127.0.0.1"],
}


@pytest.fixture
async def hs() -> AsyncIterator[InProcessServer]:
    async with serve_in_process(push=FAST_PUSH) as server:
        yield server


def pusher_body(url: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "profile_tag": "tag",
        "kind": "http",
        "app_id": "sytest",
        "app_display_name": "sytest_display_name",
        "device_display_name": "device_display_name",
        "pushkey": "a_push_key",
        "lang": "en",
        "data": {"url": url},
    }
    body.update(overrides)
    return body


DUMMY_URL = "https://dummy.url/_matrix/push/v1/notify"


async def pushers(client: Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = assert_ok(await client.get("/pushers"))["pushers"]
    return listed


async def register(server: InProcessServer, http: httpx.AsyncClient, *names: str) -> list[Client]:
    """Logged-in users of a server started in the test itself."""
    users = [await server.register_user(name, "pw") for name in names]
    return [Client(http, u.user_id, u.access_token, u.device_id) for u in users]


async def shared_room(alice: Client, bob: Client, **body: Any) -> str:
    room_id = await create_room(alice, **body)
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    return room_id


@pytest.fixture
async def gateway() -> AsyncIterator[PushGateway]:
    async with open_push_gateway() as gw:
        yield gw


# --- The pusher API -------------------------------------------------------------------------


async def test_set_and_fetch_a_pusher(alice: Client) -> None:
    # SyTest 61push/06_get_pusher.pl: every field comes back, data as given.
    data = {"testcustom": "custom data", "url": DUMMY_URL, "format": "id_event_only"}
    body = pusher_body(DUMMY_URL, data=data, pushkey="This is my pushkey")
    assert assert_ok(await alice.post("/pushers/set", body)) == {}
    assert await pushers(alice) == [
        {
            "app_display_name": "sytest_display_name",
            "app_id": "sytest",
            "data": data,
            "device_display_name": "device_display_name",
            "kind": "http",
            "lang": "en",
            "profile_tag": "tag",
            "pushkey": "This is my pushkey",
        }
    ]
    # Setting it again updates it instead of adding one; profile_tag is optional.
    again = pusher_body(DUMMY_URL, pushkey="This is my pushkey", lang="fr")
    del again["profile_tag"]
    assert_ok(await alice.post("/pushers/set", again))
    (pusher,) = await pushers(alice)
    assert (pusher["lang"], pusher["profile_tag"], pusher["data"]) == ("fr", "", again["data"])


async def test_no_pushers_at_first_and_a_token_is_needed(
    alice: Client, http: httpx.AsyncClient
) -> None:
    assert await pushers(alice) == []
    response = await http.get("/_matrix/client/v3/pushers")
    assert_error(response, 401, "M_MISSING_TOKEN")


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"kind": None, "pushkey": None}, "M_MISSING_PARAM"),
        ({"lang": None}, "M_MISSING_PARAM"),
        ({"data": None}, "M_MISSING_PARAM"),
        ({"app_id": 12}, "M_INVALID_PARAM"),
        ({"pushkey": ["x"]}, "M_INVALID_PARAM"),
        ({"data": "url"}, "M_INVALID_PARAM"),
        ({"kind": 3}, "M_INVALID_PARAM"),
        ({"kind": "email"}, "M_INVALID_PARAM"),
        ({"app_display_name": {}}, "M_INVALID_PARAM"),
        ({"profile_tag": 1}, "M_INVALID_PARAM"),
        ({"append": "yes"}, "M_INVALID_PARAM"),
        ({"app_id": "a" * 65}, "M_INVALID_PARAM"),
        ({"pushkey": "é" * 257}, "M_INVALID_PARAM"),
        ({"data": {}}, "M_MISSING_PARAM"),
        ({"data": {"url": 5}}, "M_INVALID_PARAM"),
        ({"data": {"url": "ftp://gw.example/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https:///_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://gw.example:99999/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://gw.example/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": DUMMY_URL, "format": 1}}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_pushers_are_refused_and_change_nothing(
    alice: Client, bob: Client, change: dict[str, Any], errcode: str
) -> None:
    # Bob's pusher with the same app id and pushkey would go if the request went through.
    assert_ok(await bob.post("/pushers/set", pusher_body(DUMMY_URL)))
    body = pusher_body(DUMMY_URL)
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    assert_error(await alice.post("/pushers/set", body), 400, errcode)
    assert await pushers(alice) == []
    assert len(await pushers(bob)) == 1


async def test_set_needs_a_json_object(alice: Client) -> None:
    response = await alice.post("/pushers/set", content=b"{nope")
    assert_error(response, 400, "M_NOT_JSON")
    assert_error(await alice.post("/pushers/set", [1]), 400, "M_BAD_JSON")


async def test_a_null_kind_deletes_only_that_pusher(alice: Client, bob: Client) -> None:
    for key in ("k1", "k2"):
        assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey=key)))
    assert_ok(await bob.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="k1", append=True)))
    delete = {"kind": None, "app_id": "sytest", "pushkey": "k1"}
    assert assert_ok(await alice.post("/pushers/set", delete)) == {}
    assert [p["pushkey"] for p in await pushers(alice)] == ["k2"]
    # Bob's pusher with the same key is his own; deleting an unknown one is fine too.
    assert [p["pushkey"] for p in await pushers(bob)] == ["k1"]
    assert_ok(await alice.post("/pushers/set", delete))
    assert_ok(await alice.post("/pushers/set", {**delete, "app_id": "other"}))
    assert [p["pushkey"] for p in await pushers(bob)] == ["k1"]


async def test_without_append_other_users_lose_the_same_pushkey(
    alice: Client, bob: Client
) -> None:
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL)))
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="mine")))
    # append: Bob's pusher is added next to Alice's.
    assert_ok(await bob.post("/pushers/set", pusher_body(DUMMY_URL, append=True)))
    assert len(await pushers(alice)) == 2
    assert len(await pushers(bob)) == 1
    # Without append (spec: the default), Alice's pusher with that app id and pushkey goes.
    assert_ok(await bob.post("/pushers/set", pusher_body(DUMMY_URL, lang="de")))
    assert [p["pushkey"] for p in await pushers(alice)] == ["mine"]
    assert [p["lang"] for p in await pushers(bob)] == ["de"]


async def test_logging_out_deletes_the_devices_pushers(
    hs: InProcessServer, http: httpx.AsyncClient, alice: Client
) -> None:
    phone = await Client.login(http, "alice", "alicepw")
    assert_ok(await phone.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="phone")))
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="laptop")))
    assert_ok(await phone.post("/logout", {}))
    assert [p["pushkey"] for p in await pushers(alice)] == ["laptop"]
    # Deleting a device through the devices API does the same.
    tablet = await Client.login(http, "alice", "alicepw")
    assert_ok(await tablet.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="tablet")))
    response = await alice.with_password_uia(
        "DELETE", f"/devices/{tablet.device_id}", {}, "alicepw"
    )
    assert_ok(response)
    assert [p["pushkey"] for p in await pushers(alice)] == ["laptop"]


async def test_a_password_change_deletes_other_devices_pushers(
    http: httpx.AsyncClient, alice: Client
) -> None:
    # SyTest 14account/01change-password.pl: pushers of other logins go, this one's stay.
    other = await Client.login(http, "alice", "alicepw")
    assert_ok(await other.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="other")))
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="mine")))
    response = await alice.with_password_uia(
        "POST", "/account/password", {"new_password": "newpw"}, "alicepw"
    )
    assert_ok(response)
    assert [p["pushkey"] for p in await pushers(alice)] == ["mine"]


def test_push_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"config\.push: unknown key bogus"):
        config_from_mapping({"push": {"bogus": 1}}, base_dir=Path())
    with pytest.raises(ConfigError, match=r"config\.push\.timeout: must be positive"):
        config_from_mapping({"push": {"timeout": 0}}, base_dir=Path())
    with pytest.raises(ConfigError, match=re.escape("'10.0.0.0/33' is not an IP address range")):
        config_from_mapping({"push": {"ip_range_allowlist": ["10.0.0.0/33"]}}, base_dir=Path())
    config = config_from_mapping({"push": {"include_content": False}}, base_dir=Path())
    assert "127.0.0.0/8" in config.push.ip_range_blocklist
    assert config.push.include_content is False
    assert config.push.group_unread_count_by_room is True


# --- Delivery -------------------------------------------------------------------------------


async def test_a_message_is_pushed_and_a_receipt_updates_the_badge(
    hs: InProcessServer, alice: Client, bob: Client, gateway: PushGateway
) -> None:
    # SyTest 61push/01message-pushed.pl.
    room_id = await shared_room(alice, bob, name="Pushy")
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url)))
    event_id = await send_text(bob, room_id, "Room message")
    request = await gateway.next()
    assert request.path == "/_matrix/push/v1/notify"
    notification = request.notification
    (device,) = notification.pop("devices")
    assert notification == {
        "id": event_id,
        "event_id": event_id,
        "room_id": room_id,
        "type": "m.room.message",
        "sender": bob.user_id,
        "sender_display_name": "bob",
        "room_name": "Pushy",
        "prio": "high",
        "counts": {"unread": 1},
        "content": {"msgtype": "m.text", "body": "Room message"},
    }
    assert device["app_id"] == "sytest"
    assert device["pushkey"] == "a_push_key"
    assert isinstance(device["pushkey_ts"], int)
    assert device["data"] == {}
    # The default rule .m.rule.room_one_to_one: a sound.
    assert device["tweaks"] == {"sound": "default"}
    # Reading the message sends a counts-only update with a zero badge.
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))
    badge = (await gateway.next()).notification
    assert badge["counts"] == {"unread": 0}
    assert badge["devices"][0]["pushkey"] == "a_push_key"
    assert await gateway.nothing_within(0.3)


async def test_invites_are_pushed(alice: Client, bob: Client, gateway: PushGateway) -> None:
    # SyTest 61push/01message-pushed.pl "Invites are pushed".
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url)))
    room_id = await create_room(bob, name="Invite room")
    await invite(bob, room_id, alice.user_id)
    notification = (await gateway.next()).notification
    assert notification["type"] == "m.room.member"
    assert notification["membership"] == "invite"
    assert notification["user_is_target"] is True
    assert (notification["room_id"], notification["sender"]) == (room_id, bob.user_id)
    assert notification["room_name"] == "Invite room"
    assert notification["content"]["membership"] == "invite"
    # The pending invite counts in the badge (Synapse).
    assert notification["counts"] == {"unread": 1}


async def test_a_canonical_alias_names_the_room_and_own_messages_are_not_pushed(
    hs: InProcessServer, alice: Client, bob: Client, gateway: PushGateway
) -> None:
    # SyTest 61push/01message-pushed.pl "Rooms with canonical alias are correctly named".
    room_id = await shared_room(alice, bob)
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url)))
    # Without a name or alias, the room is named after the other members (Synapse).
    await send_text(bob, room_id, "unnamed")
    assert (await gateway.next()).notification["room_name"] == "bob"
    carol = await hs.register_user("carol", "pw")
    await invite(alice, room_id, carol.user_id)
    await send_text(bob, room_id, "still unnamed")
    assert (await gateway.next()).notification["room_name"] == "bob and carol"
    alias = "#pushy:localhost"
    assert_ok(await alice.put(f"/directory/room/{quote(alias)}", {"room_id": room_id}))
    await set_state(alice, room_id, "m.room.canonical_alias", {"alias": alias})
    await send_text(alice, room_id, "my own message")
    event_id = await send_text(bob, room_id, "named by alias")
    notification = (await gateway.next()).notification
    assert (notification["event_id"], notification["room_name"]) == (event_id, alias)
    assert await gateway.nothing_within(0.3)


async def test_event_id_only_and_the_badge_counts_rooms(
    hs: InProcessServer, alice: Client, bob: Client, gateway: PushGateway
) -> None:
    first = await shared_room(alice, bob)
    second = await shared_room(alice, bob)
    data = {"url": gateway.url, "format": "event_id_only", "extra": 1}
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url, data=data)))
    bodies = []
    # One at a time: the badge is the one at delivery time, as Synapse's.
    for room_id, text in ((first, "one"), (first, "two"), (second, "three")):
        last = await send_text(bob, room_id, text)
        bodies.append((await gateway.next()).notification)
    # The badge counts rooms with unread notifications (group_unread_count_by_room).
    assert [b["counts"]["unread"] for b in bodies] == [1, 1, 2]
    assert bodies[2] == {
        "event_id": last,
        "room_id": second,
        "counts": {"unread": 2},
        "prio": "high",
        "devices": [
            {
                "app_id": "sytest",
                "pushkey": "a_push_key",
                "pushkey_ts": bodies[2]["devices"][0]["pushkey_ts"],
                "data": {"format": "event_id_only", "extra": 1},
            }
        ],
    }


async def test_without_content_and_counting_notifications(
    tmp_path: Path, gateway: PushGateway
) -> None:
    push = {**FAST_PUSH, "include_content": False, "group_unread_count_by_room": False}
    async with (
        serve_in_process(tmp_path, push=push) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        await send_text(dan, room_id, "secret")
        first = (await gateway.next()).notification
        await send_text(dan, room_id, "secret 2")
        second = (await gateway.next()).notification
    assert "content" not in first
    assert first["sender"] == dan.user_id
    assert [first["counts"]["unread"], second["counts"]["unread"]] == [1, 2]


async def test_updating_a_pusher_moves_delivery_to_its_new_url(
    alice: Client, bob: Client, gateway: PushGateway
) -> None:
    room_id = await shared_room(alice, bob)
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url)))
    await send_text(bob, room_id, "to the first")
    await gateway.next()
    async with open_push_gateway() as second:
        assert_ok(await alice.post("/pushers/set", pusher_body(second.url)))
        event_id = await send_text(bob, room_id, "to the second")
        assert (await second.next()).notification["event_id"] == event_id
        assert await gateway.nothing_within(0.3)
        # Deleting it stops delivery.
        delete = {"kind": None, "app_id": "sytest", "pushkey": "a_push_key"}
        assert_ok(await alice.post("/pushers/set", delete))
        await send_text(bob, room_id, "to nobody")
        assert await second.nothing_within(0.3)


async def test_a_failing_gateway_is_retried_with_backoff(
    hs: InProcessServer, alice: Client, bob: Client, gateway: PushGateway
) -> None:
    room_id = await shared_room(alice, bob)
    assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url)))
    gateway.script = [FAIL, FAIL, ok({})]
    event_id = await send_text(bob, room_id, "retry me")
    attempts = [await gateway.next() for _ in range(3)]
    assert [a.notification["event_id"] for a in attempts] == [event_id] * 3
    # 0.05 s, then 0.1 s (doubling).
    assert attempts[1].at - attempts[0].at >= 0.04
    assert attempts[2].at - attempts[1].at >= 0.09
    # The position moved on once delivered: the next message is pushed once.
    later = await send_text(bob, room_id, "next")
    assert (await gateway.next()).notification["event_id"] == later
    assert await gateway.nothing_within(0.3)


async def test_a_notification_failing_too_long_is_given_up(
    tmp_path: Path, gateway: PushGateway
) -> None:
    async with (
        serve_in_process(tmp_path, push={**FAST_PUSH, "give_up_after": 0.1}) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        dropped = ""

        def answer(body: dict[str, Any]) -> Answer:
            return FAIL if body["notification"]["event_id"] == dropped else Answer()

        gateway.answer_for = answer
        dropped = await send_text(dan, room_id, "lost")
        # Retried (0.05 s, 0.1 s, ...) until failing for give_up_after, then dropped.
        attempts = 0
        while (await gateway.next()).notification["event_id"] == dropped:
            attempts += 1
            if attempts == 2:
                later = await send_text(dan, room_id, "next")
        assert attempts >= 2
        assert gateway.received[-1].notification["event_id"] == later
        assert await gateway.nothing_within(0.3)


async def test_a_rejected_pushkey_deletes_the_pusher(
    hs: InProcessServer, alice: Client, bob: Client, gateway: PushGateway
) -> None:
    # SyTest 61push/08_rejected_pushers.pl.
    room_id = await shared_room(alice, bob)
    for key in ("key_1", "key_2"):
        assert_ok(await alice.post("/pushers/set", pusher_body(gateway.url, pushkey=key)))
    assert len(await pushers(alice)) == 2

    async def answer() -> set[str]:
        seen = set()
        for _ in range(2):
            request = await gateway.next()
            seen.add(request.notification["devices"][0]["pushkey"])
        return seen

    await send_text(bob, room_id, "message 1")
    assert await answer() == {"key_1", "key_2"}
    # Which pusher's request comes first is not fixed: reject key_1 whichever asks.
    gateway.script = [ok({"rejected": ["key_1"]}), ok({"rejected": ["key_1"]})]
    await send_text(bob, room_id, "message 2")
    await answer()
    for _ in range(500):  # the worker deletes the pusher right after the answer
        if len(await pushers(alice)) == 1:
            break
        await trio.sleep(0.02)
    assert [p["pushkey"] for p in await pushers(alice)] == ["key_2"]
    await send_text(bob, room_id, "message 3")
    assert (await gateway.next()).notification["devices"][0]["pushkey"] == "key_2"
    assert await gateway.nothing_within(0.3)


async def test_a_hanging_gateway_slows_neither_sends_nor_other_pushers(
    tmp_path: Path,
) -> None:
    async with (
        open_push_gateway() as stuck,
        open_push_gateway() as fine,
        serve_in_process(tmp_path, push={**FAST_PUSH, "timeout": 30.0}) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
    ):
        carol, dan, erin = await register(server, http, "carol", "dan", "erin")
        room_id = await shared_room(carol, dan)
        await invite(carol, room_id, erin.user_id)
        await join(erin, room_id)
        stuck.script = [HANG] * 100
        assert_ok(await carol.post("/pushers/set", pusher_body(stuck.url, pushkey="c")))
        assert_ok(await erin.post("/pushers/set", pusher_body(fine.url, pushkey="e")))
        first = await send_text(dan, room_id, "hang on")
        await stuck.next()  # carol's gateway now holds the request open
        assert (await fine.next()).notification["event_id"] == first
        latencies = []
        for n in range(5):
            started = trio.current_time()
            event_id = await send_text(dan, room_id, f"m{n}")
            latencies.append(trio.current_time() - started)
            # Erin's pusher is not held up by Carol's.
            assert (await fine.next(within=5)).notification["event_id"] == event_id
        # Each send is answered at once (on a loaded machine, well under a second), far
        # below the 30 s that Carol's gateway holds its request.
        assert max(latencies) < 1.0, latencies
        assert len(stuck.received) == 1  # still the first request, held open


async def test_a_timeout_counts_as_a_failure(tmp_path: Path, gateway: PushGateway) -> None:
    async with (
        # The gateway stamps a request once it has read it, later than the pusher's timeout
        # started (tens of ms on a loaded machine, more with three instances in one trio
        # run): a backoff as long as the timeout leaves that delay room, so the gap below is
        # at least the timeout whenever the timeout was honoured.
        serve_in_process(
            tmp_path, push={**FAST_PUSH, "timeout": 0.2, "initial_backoff": 0.2}
        ) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        gateway.script = [HANG]
        event_id = await send_text(dan, room_id, "slow")
        first, second = await gateway.next(), await gateway.next()
        assert first.notification["event_id"] == second.notification["event_id"] == event_id
        assert second.at - first.at >= 0.2


async def test_a_restart_resumes_without_duplicates(tmp_path: Path, gateway: PushGateway) -> None:
    async with (
        serve_in_process(tmp_path, push=FAST_PUSH) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        delivered = await send_text(dan, room_id, "before")
        assert (await gateway.next()).notification["event_id"] == delivered
        # The gateway fails from now on: the next message is still owed at shutdown.
        gateway.script = [FAIL] * 1000
        owed = await send_text(dan, room_id, "owed")
        assert (await gateway.next()).notification["event_id"] == owed
    gateway.script = []
    gateway.drain()  # retries the first server made before it stopped
    async with serve_in_process(tmp_path, push=FAST_PUSH):
        assert (await gateway.next()).notification["event_id"] == owed
        assert await gateway.nothing_within(0.5)


async def test_pushers_can_be_switched_off(tmp_path: Path, gateway: PushGateway) -> None:
    async with (
        serve_in_process(tmp_path, push={**FAST_PUSH, "enabled": False}) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        assert len(await pushers(carol)) == 1
        await send_text(dan, room_id, "quiet")
        assert await gateway.nothing_within(0.5)


async def test_loopback_and_private_addresses_are_refused_by_default(
    tmp_path: Path, gateway: PushGateway
) -> None:
    push = {k: v for k, v in FAST_PUSH.items() if k != "ip_range_allowlist"}
    async with (
        serve_in_process(tmp_path, push=push) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        carol, dan = await register(server, http, "carol", "dan")
        room_id = await shared_room(carol, dan)
        # Synapse accepts such a pusher too; it just never reaches the address.
        assert_ok(await carol.post("/pushers/set", pusher_body(gateway.url)))
        await send_text(dan, room_id, "not for loopback")
        assert await gateway.nothing_within(0.5)


async def test_a_host_name_is_resolved_and_checked(
    alice: Client, bob: Client, gateway: PushGateway
) -> None:
    # "localhost" may resolve to ::1 as well: only 127.0.0.1 is allowed, and used.
    url = gateway.url.replace("127.0.0.1", "localhost")
    room_id = await shared_room(alice, bob)
    assert_ok(await alice.post("/pushers/set", pusher_body(url)))
    event_id = await send_text(bob, room_id, "by name")
    assert (await gateway.next()).notification["event_id"] == event_id


async def test_a_user_may_have_a_bounded_number_of_pushers(alice: Client, bob: Client) -> None:
    for i in range(MAX_PUSHERS_PER_USER):
        assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey=f"key{i}")))
    one_more = await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="one-more"))
    assert_error(one_more, 400, "M_INVALID_PARAM")
    assert len(await pushers(alice)) == MAX_PUSHERS_PER_USER
    # Updating one of them still works, as do other users' and a deletion.
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="key0", lang="fr")))
    assert_ok(await bob.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="bobs")))
    gone = {"app_id": "sytest", "pushkey": "key1", "kind": None}
    assert_ok(await alice.post("/pushers/set", gone))
    assert_ok(await alice.post("/pushers/set", pusher_body(DUMMY_URL, pushkey="one-more")))
