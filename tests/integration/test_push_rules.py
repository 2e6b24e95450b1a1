"""Push rules over real HTTP (spec "Push Rules API"; SyTest 61push/02add_rules, 05_set_actions,
07_set_enabled, 80torture; 30rooms/60version_upgrade "push rules copied to upgraded room")."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import trio

from trioserver.handlers.push_rules import MAX_OWN_RULES
from trioserver.push.evaluator import PushContext

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join
from tests.integration.writer_env import writer_env

RULES = "/pushrules/global"
NOTICE = [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}]


def _path(kind: str, rule_id: str, attr: str = "") -> str:
    return f"{RULES}/{kind}/{quote(rule_id, safe='')}" + (f"/{attr}" if attr else "")


async def add(
    client: Client, kind: str, rule_id: str, body: dict[str, Any] | None = None, **params: str
) -> None:
    payload = {"actions": ["notify"], **(body or {})}
    assert_ok(await client.put(_path(kind, rule_id), payload, params=params))


async def all_rules(client: Client) -> dict[str, list[dict[str, Any]]]:
    rules: dict[str, list[dict[str, Any]]] = assert_ok(await client.get("/pushrules/"))["global"]
    return rules


async def rule_ids(client: Client, kind: str) -> list[str]:
    return [r["rule_id"] for r in (await all_rules(client))[kind]]


async def sync(client: Client, **params: Any) -> dict[str, Any]:
    return assert_ok(await client.get("/sync", params=params, timeout=30))


def push_rules_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["content"] for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]


# -- Reading ------------------------------------------------------------------------------


async def test_defaults_are_present_in_spec_order(alice: Client) -> None:
    rules = await all_rules(alice)
    assert list(rules) == ["override", "content", "room", "sender", "underride"]
    assert [r["rule_id"] for r in rules["override"]][:4] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
    ]
    assert rules["override"][0]["enabled"] is False
    assert rules["content"] == [
        {
            "rule_id": ".m.rule.contains_user_name",
            "default": True,
            "enabled": True,
            "pattern": "alice",
            "actions": [
                "notify",
                {"set_tweak": "sound", "value": "default"},
                {"set_tweak": "highlight"},
            ],
        }
    ]
    underride = [r["rule_id"] for r in rules["underride"]]
    assert underride.index(".m.rule.room_one_to_one") < underride.index(".m.rule.message")
    for rule in (r for kind in rules.values() for r in kind):
        assert rule["default"] is True
        assert isinstance(rule["enabled"], bool)


async def test_get_paths(alice: Client) -> None:
    everything = await all_rules(alice)
    assert assert_ok(await alice.get(f"{RULES}/")) == everything
    kind = await alice.get(f"{RULES}/underride/")
    assert kind.status_code == 200
    assert kind.json() == everything["underride"]
    master = assert_ok(await alice.get(_path("override", ".m.rule.master")))
    assert master == everything["override"][0]
    assert assert_ok(await alice.get(_path("override", ".m.rule.master", "enabled"))) == {
        "enabled": False
    }
    assert assert_ok(await alice.get(_path("override", ".m.rule.master", "actions"))) == {
        "actions": []
    }


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/pushrules", 404),
        ("/pushrules/global", 400),
        ("/pushrules/global/room", 400),
        ("/pushrules/not_a_scope/", 400),
        ("/pushrules/global/not_a_kind/", 400),
        ("/pushrules/global/override/.m.rule.master/not_an_attr", 400),
        ("/pushrules/global/override/.m.rule.master/enabled/more", 400),
    ],
)
async def test_bad_get_paths(alice: Client, path: str, status: int) -> None:
    assert_error(await alice.get(path), status, "M_UNRECOGNIZED")


async def test_unknown_rule_is_404(alice: Client) -> None:
    assert_error(await alice.get(_path("override", "nope")), 404, "M_NOT_FOUND")
    assert_error(await alice.get(_path("override", "nope", "enabled")), 404, "M_NOT_FOUND")
    # A default rule lives in its own kind only.
    assert_error(await alice.get(_path("underride", ".m.rule.master")), 404, "M_NOT_FOUND")


async def test_push_rules_need_a_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/_matrix/client/v3/pushrules/")
    assert_error(response, 401, "M_MISSING_TOKEN")


# -- Adding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rule_id", "body"),
    [
        ("room", "#spam:example.com", {}),
        ("sender", "@bob:example.com", {}),
        ("content", "my_content_rule", {"pattern": "my_pattern"}),
        ("override", "my_override_rule", {"conditions": NOTICE}),
        ("underride", "my_underride_rule", {"conditions": NOTICE}),
        ("content", "тест", {"pattern": "тест"}),
    ],
)
async def test_add_each_kind(alice: Client, kind: str, rule_id: str, body: dict[str, Any]) -> None:
    await add(alice, kind, rule_id, body)
    rule = assert_ok(await alice.get(_path(kind, rule_id)))
    expected: dict[str, Any] = {
        "rule_id": rule_id,
        "default": False,
        "enabled": True,
        "actions": ["notify"],
    }
    if kind in ("override", "underride"):
        expected["conditions"] = NOTICE
    if kind == "content":
        expected["pattern"] = body["pattern"]
    assert rule == expected
    # User rules come before the defaults of their kind (after .m.rule.master).
    ids = await rule_ids(alice, kind)
    assert ids[1 if kind == "override" else 0] == rule_id
    kind_list = (await alice.get(f"{RULES}/{kind}/")).json()
    assert rule in kind_list
    assert assert_ok(await alice.get(_path(kind, rule_id, "enabled"))) == {"enabled": True}
    assert assert_ok(await alice.get(_path(kind, rule_id, "actions"))) == {"actions": ["notify"]}


async def test_new_rules_come_first_and_before_after_place_them(alice: Client) -> None:
    await add(alice, "room", "#a:example.com")
    await add(alice, "room", "#b:example.com")
    assert await rule_ids(alice, "room") == ["#b:example.com", "#a:example.com"]
    await add(alice, "room", "#c:example.com", before="#a:example.com")
    assert await rule_ids(alice, "room") == ["#b:example.com", "#c:example.com", "#a:example.com"]
    await add(alice, "room", "#d:example.com", after="#b:example.com")
    assert await rule_ids(alice, "room") == [
        "#b:example.com",
        "#d:example.com",
        "#c:example.com",
        "#a:example.com",
    ]
    await add(alice, "room", "#e:example.com", after="#a:example.com")
    assert (await rule_ids(alice, "room"))[-1] == "#e:example.com"
    await add(alice, "room", "#f:example.com", before="#b:example.com")
    assert (await rule_ids(alice, "room"))[0] == "#f:example.com"


async def test_before_or_after_an_unknown_rule_is_400_and_adds_nothing(alice: Client) -> None:
    await add(alice, "room", "#a:example.com")
    for params in ({"before": "#nope:example.com"}, {"after": "#nope:example.com"}):
        response = await alice.put(_path("room", "#x:example.com"), {"actions": []}, params=params)
        assert_error(response, 400, "M_UNKNOWN")
    # Not relative to a server-default rule either, nor to a rule of another kind.
    response = await alice.put(
        _path("override", "o"),
        {"actions": [], "conditions": []},
        params={"before": ".m.rule.master"},
    )
    assert_error(response, 400, "M_UNKNOWN")
    response = await alice.put(
        _path("sender", "@x:example.com"), {"actions": []}, params={"after": "#a:example.com"}
    )
    assert_error(response, 400, "M_UNKNOWN")
    assert await rule_ids(alice, "room") == ["#a:example.com"]
    assert await rule_ids(alice, "sender") == []


async def test_adding_the_same_rule_twice_replaces_it(alice: Client) -> None:
    await add(alice, "sender", "@bob:example.com")
    assert_ok(await alice.put(_path("sender", "@bob:example.com", "enabled"), {"enabled": False}))
    await add(alice, "sender", "@bob:example.com", {"actions": ["dont_notify"]})
    (rule,) = (await all_rules(alice))["sender"]
    assert rule["actions"] == ["dont_notify"]
    # Whether it is enabled survives being replaced (Synapse).
    assert rule["enabled"] is False


async def test_delete(alice: Client) -> None:
    await add(alice, "room", "#a:example.com")
    await add(alice, "room", "#b:example.com")
    assert_ok(await alice.delete(_path("room", "#a:example.com")))
    assert await rule_ids(alice, "room") == ["#b:example.com"]
    assert_error(await alice.delete(_path("room", "#a:example.com")), 404, "M_NOT_FOUND")
    assert_error(await alice.delete(_path("override", ".m.rule.master")), 400, "M_INVALID_PARAM")
    assert_error(await alice.delete(_path("override", ".not.a.rule")), 404, "M_NOT_FOUND")
    assert_error(await alice.delete(f"{RULES}/nope/x"), 400, "M_UNRECOGNIZED")
    assert_error(
        await alice.delete(_path("room", "#b:example.com", "enabled")), 400, "M_UNRECOGNIZED"
    )
    assert ".m.rule.master" in await rule_ids(alice, "override")


# -- enabled and actions ------------------------------------------------------------------


async def test_enable_and_disable_every_default_rule(alice: Client) -> None:
    rules = await all_rules(alice)
    for kind, kind_rules in rules.items():
        for rule in kind_rules:
            path = _path(kind, rule["rule_id"], "enabled")
            for value in (True, False, True):
                assert_ok(await alice.put(path, {"enabled": value}))
                assert assert_ok(await alice.get(path)) == {"enabled": value}


async def test_change_actions_of_every_default_rule(alice: Client) -> None:
    rules = await all_rules(alice)
    for kind, kind_rules in rules.items():
        for rule in kind_rules:
            path = _path(kind, rule["rule_id"], "actions")
            assert_ok(await alice.put(path, {"actions": ["dont_notify"]}))
            assert assert_ok(await alice.get(path)) == {"actions": ["dont_notify"]}
    # The rest of a default rule is as shipped.
    master = assert_ok(await alice.get(_path("override", ".m.rule.master")))
    assert master["default"] is True
    assert master["conditions"] == []


async def test_enabled_and_actions_of_user_rules(alice: Client) -> None:
    await add(alice, "sender", "@bob:example.com")
    path = _path("sender", "@bob:example.com")
    assert_ok(await alice.put(f"{path}/actions", {"actions": ["dont_notify"]}))
    assert assert_ok(await alice.get(f"{path}/actions")) == {"actions": ["dont_notify"]}
    assert_ok(await alice.put(f"{path}/enabled", {"enabled": False}))
    assert assert_ok(await alice.get(path))["enabled"] is False
    # Synapse also takes a bare boolean.
    assert_ok(await alice.put(f"{path}/enabled", True))
    assert assert_ok(await alice.get(path))["enabled"] is True


async def test_enabled_and_actions_of_unknown_rules_are_404(alice: Client) -> None:
    for attr, body in (("enabled", {"enabled": True}), ("actions", {"actions": ["notify"]})):
        for kind, rule_id in (("override", ".not.a.default.rule"), ("sender", "@bob:example.com")):
            response = await alice.put(_path(kind, rule_id, attr), body)
            assert_error(response, 404, "M_NOT_FOUND")


# -- Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "errcode"),
    [
        ("/", {}, "M_UNRECOGNIZED"),
        ("/not_a_scope/room/%23spam:example.com", {}, "M_UNRECOGNIZED"),
        ("/global", {}, "M_UNRECOGNIZED"),
        ("/global/room", {}, "M_UNRECOGNIZED"),
        ("/global/room/", {}, "M_UNRECOGNIZED"),
        ("/global/not_a_template/foo", {}, "M_UNRECOGNIZED"),
        ("/global/room/%23fo%5Co:example.com", {"actions": []}, "M_INVALID_PARAM"),
        ("/global/room/a%2Fb", {"actions": []}, "M_INVALID_PARAM"),
        ("/global/override/my_id", {"actions": []}, "M_MISSING_PARAM"),
        ("/global/underride/my_id", {"actions": []}, "M_MISSING_PARAM"),
        ("/global/underride/my_id", {"actions": [], "conditions": [{}]}, "M_INVALID_PARAM"),
        ("/global/underride/my_id", {"actions": [], "conditions": {}}, "M_INVALID_PARAM"),
        ("/global/underride/my_id", {"actions": [], "conditions": ["x"]}, "M_INVALID_PARAM"),
        (
            "/global/override/my_id",
            {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]},
            "M_INVALID_PARAM",
        ),
        (
            "/global/override/my_id",
            {"actions": [], "conditions": [{"kind": "room_member_count", "is": "two"}]},
            "M_INVALID_PARAM",
        ),
        (
            "/global/override/my_id",
            {
                "actions": [],
                "conditions": [{"kind": "event_property_is", "key": "k", "value": []}],
            },
            "M_INVALID_PARAM",
        ),
        ("/global/content/my_id", {"actions": []}, "M_MISSING_PARAM"),
        ("/global/content/my_id", {"actions": [], "pattern": 5}, "M_INVALID_PARAM"),
        ("/global/content/my_id", {"actions": [], "pattern": "x" * 513}, "M_INVALID_PARAM"),
        (
            "/global/override/my_id",
            {
                "actions": [],
                "conditions": [{"kind": "event_match", "key": "k", "pattern": "x" * 513}],
            },
            "M_INVALID_PARAM",
        ),
        ("/global/room/%23my_room:example.com", {}, "M_MISSING_PARAM"),
        ("/global/room/%23my_room:example.com", {"actions": ["not_an_action"]}, "M_INVALID_PARAM"),
        ("/global/room/%23my_room:example.com", {"actions": "notify"}, "M_INVALID_PARAM"),
        ("/global/room/%23my_room:example.com", {"actions": [{"value": 1}]}, "M_INVALID_PARAM"),
        ("/global/room/%23my_room:example.com", {"actions": ["notify"] * 33}, "M_INVALID_PARAM"),
        ("/global/room/%23my_room:example.com", ["notify"], "M_BAD_JSON"),
        ("/global/room/" + "x" * 600, {"actions": []}, "M_INVALID_PARAM"),
        ("/global/override/.m.rule.master/not_an_attr", {"enabled": True}, "M_UNRECOGNIZED"),
        (
            "/global/override/.m.rule.master/enabled",
            {"enabled": "not a boolean"},
            "M_INVALID_PARAM",
        ),
        ("/global/override/.m.rule.master/enabled", {}, "M_INVALID_PARAM"),
        ("/global/override/.m.rule.master/actions", {"actions": ["bad"]}, "M_INVALID_PARAM"),
        ("/global/override/.m.rule.master/actions", {}, "M_MISSING_PARAM"),
        ("/global/override/.m.rule.master/actions", [], "M_BAD_JSON"),
        ("/global/override/.m.rule.master", {"actions": [], "conditions": []}, "M_INVALID_PARAM"),
        ("/global/override/.my.rule", {"actions": [], "conditions": []}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_puts_are_400_and_change_nothing(
    alice: Client, path: str, body: Any, errcode: str
) -> None:
    before = await all_rules(alice)
    assert_error(await alice.put(f"/pushrules{path}", body), 400, errcode)
    assert await all_rules(alice) == before


async def test_bodies_that_are_not_json_are_400(alice: Client) -> None:
    response = await alice.http.put(
        f"/_matrix/client/v3{_path('room', '#a:example.com')}",
        content=b"{nope",
        headers=alice.headers,
    )
    assert_error(response, 400, "M_NOT_JSON")


async def test_unknown_condition_kinds_are_stored(alice: Client) -> None:
    conditions = [{"kind": "org.example.future", "whatever": 1}]
    await add(alice, "override", "future", {"conditions": conditions})
    assert assert_ok(await alice.get(_path("override", "future")))["conditions"] == conditions


async def test_rules_are_per_user(alice: Client, bob: Client) -> None:
    await add(alice, "room", "#a:example.com")
    await add(alice, "content", "secret", {"pattern": "secret"})
    assert await rule_ids(bob, "room") == []
    assert_error(await bob.get(_path("room", "#a:example.com")), 404, "M_NOT_FOUND")
    assert_error(await bob.delete(_path("room", "#a:example.com")), 404, "M_NOT_FOUND")
    response = await bob.put(_path("room", "#a:example.com", "enabled"), {"enabled": False})
    assert_error(response, 404, "M_NOT_FOUND")
    assert_ok(await bob.put(_path("override", ".m.rule.master", "enabled"), {"enabled": True}))
    assert (await all_rules(alice))["override"][0]["enabled"] is False
    assert assert_ok(await alice.get(_path("room", "#a:example.com")))["enabled"] is True
    assert (await all_rules(bob))["content"][0]["pattern"] == "bob"


# -- Account data and /sync ---------------------------------------------------------------


async def test_account_data_m_push_rules(alice: Client) -> None:
    base = f"/user/{quote(alice.user_id)}/account_data/m.push_rules"
    assert assert_ok(await alice.get(base)) == assert_ok(await alice.get("/pushrules/"))
    assert_error(await alice.put(base, {"global": {}}), 405, "M_BAD_JSON")
    await add(alice, "room", "#a:example.com")
    assert assert_ok(await alice.get(base))["global"]["room"][0]["rule_id"] == "#a:example.com"


async def test_initial_and_incremental_sync_carry_push_rules(alice: Client) -> None:
    first = await sync(alice)
    (initial,) = push_rules_in(first)
    assert initial == assert_ok(await alice.get("/pushrules/"))
    # Nothing changed: an incremental sync does not repeat them.
    quiet = await sync(alice, since=first["next_batch"])
    assert push_rules_in(quiet) == []
    await add(alice, "room", "#a:example.com")
    changed = await sync(alice, since=quiet["next_batch"])
    (rules,) = push_rules_in(changed)
    assert rules["global"]["room"][0]["rule_id"] == "#a:example.com"
    assert_ok(await alice.put(_path("override", ".m.rule.master", "enabled"), {"enabled": True}))
    again = await sync(alice, since=changed["next_batch"])
    (rules,) = push_rules_in(again)
    assert rules["global"]["override"][0]["enabled"] is True
    # An initial sync after changes still has them exactly once.
    (fresh,) = push_rules_in(await sync(alice))
    assert fresh == rules


async def test_a_change_wakes_a_long_poll(alice: Client) -> None:
    since = (await sync(alice))["next_batch"]
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await sync(alice, since=since, timeout=20_000))

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            # Give the poll time to start waiting: it must wake for the change, not time out.
            await trio.sleep(0.3)
            assert_ok(
                await alice.put(
                    _path("content", ".m.rule.contains_user_name", "enabled"), {"enabled": False}
                )
            )
    (rules,) = push_rules_in(result)
    assert rules["global"]["content"][0]["enabled"] is False


async def test_legacy_events_stream_leaves_push_rules_out(alice: Client) -> None:
    # As Synapse's v1 event stream: push rules are not account data there.
    start = assert_ok(await alice.get("/events", params={"timeout": 0}))["end"]
    await add(alice, "room", "#a:example.com")
    await set_global_data(alice, "my.test.type", {"x": 1})
    chunk = assert_ok(await alice.get("/events", params={"from": start, "timeout": 0}))["chunk"]
    assert [e["type"] for e in chunk if "room_id" not in e] == ["my.test.type"]


async def test_legacy_initial_sync_leaves_push_rules_out(alice: Client) -> None:
    # SyTest 44account_data.pl "Latest account data comes down in /initialSync" expects only
    # the user's own global entry, as Synapse answers.
    await add(alice, "room", "#a:example.com")
    await set_global_data(alice, "my.test.type", {"x": 1})
    body = assert_ok(await alice.get("/initialSync", params={"limit": 1}))
    assert [e["type"] for e in body["account_data"]] == ["my.test.type"]
    # /sync still carries them.
    assert push_rules_in(assert_ok(await alice.get("/sync"))) == [
        assert_ok(await alice.get("/pushrules/"))
    ]


async def set_global_data(client: Client, data_type: str, content: dict[str, Any]) -> None:
    path = f"/user/{quote(client.user_id)}/account_data/{data_type}"
    assert_ok(await client.put(path, content))


# -- Room upgrades ------------------------------------------------------------------------


async def test_room_rules_are_copied_on_upgrade(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await add(bob, "room", room_id, {"actions": ["dont_notify"]})
    mute = [{"kind": "event_match", "key": "room_id", "pattern": room_id}]
    await add(bob, "override", room_id, {"conditions": mute, "actions": []})
    await add(bob, "room", "!other:example.com")
    await add(alice, "room", room_id)
    upgraded = assert_ok(await alice.post(f"/rooms/{room_id}/upgrade", {"new_version": "10"}))
    new_room_id = upgraded["replacement_room"]
    bob_rules = await all_rules(bob)
    copied = next(r for r in bob_rules["room"] if r["rule_id"] == new_room_id)
    assert copied["actions"] == ["dont_notify"]
    override = next(r for r in bob_rules["override"] if r["rule_id"] == new_room_id)
    assert override["conditions"] == [
        {"kind": "event_match", "key": "room_id", "pattern": new_room_id}
    ]
    # The old room's rules stay; rules about other rooms are not copied.
    room_ids = [r["rule_id"] for r in bob_rules["room"]]
    assert room_id in room_ids
    assert room_ids.count("!other:example.com") == 1
    assert new_room_id in await rule_ids(alice, "room")


async def test_a_member_who_joins_the_upgraded_room_later_gets_their_rules_copied(
    alice: Client, bob: Client
) -> None:
    # Synapse copies a user's data for the predecessor when they join an upgraded room, not
    # only for those joined at the upgrade.
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await add(bob, "room", room_id, {"actions": ["dont_notify"]})
    tags = f"/user/{quote(bob.user_id)}/rooms/{room_id}/tags/u.work"
    assert_ok(await bob.put(tags, {"order": 0.5}))
    assert_ok(await bob.post(f"/rooms/{room_id}/leave", {}))
    upgraded = assert_ok(await alice.post(f"/rooms/{room_id}/upgrade", {"new_version": "10"}))
    new_room_id = upgraded["replacement_room"]
    assert new_room_id not in await rule_ids(bob, "room")
    await join(bob, new_room_id)
    assert new_room_id in await rule_ids(bob, "room")
    new_tags = assert_ok(await bob.get(f"/user/{quote(bob.user_id)}/rooms/{new_room_id}/tags"))
    assert new_tags["tags"] == {"u.work": {"order": 0.5}}
    # Joining a room that is no upgrade copies nothing.
    plain = await create_room(alice, preset="public_chat")
    await join(bob, plain)
    assert plain not in await rule_ids(bob, "room")


# -- The send path's view -----------------------------------------------------------------


async def test_rules_for_users_is_cached_and_follows_changes(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        bob = await env.user("bob")
        handler = env.components.deps.push_rules
        event = {"type": "m.room.message", "sender": bob, "room_id": "!r:blue", "content": {}}
        ctx = PushContext(room_member_count=3, sender_power_level=0, notification_levels={})
        first = await handler.rules_for_users([alice, bob, alice])
        assert set(first) == {alice, bob}
        assert first[alice].actions_for(event, ctx, user_id=alice, display_name=None) == ["notify"]
        # Unchanged rules come from memory: the same compiled object.
        again = await handler.rules_for_users([alice])
        assert again[alice] is first[alice]
        await handler.put_rule(alice, "room", "!r:blue", {"actions": ["dont_notify"]})
        changed = await handler.rules_for_users([alice, bob])
        assert changed[bob] is first[bob]
        assert changed[alice].actions_for(event, ctx, user_id=alice, display_name=None) == []
        await handler.set_enabled(alice, "room", "!r:blue", {"enabled": False})
        enabled = await handler.rules_for_users([alice])
        assert enabled[alice].actions_for(event, ctx, user_id=alice, display_name=None) == [
            "notify"
        ]


async def test_a_user_may_have_a_bounded_number_of_rules_per_kind(
    alice: Client, bob: Client
) -> None:
    # Each rule is evaluated for every message the user receives, on the one events writer:
    # past the bound a new rule is refused (and nothing changes), while replacing one is not.
    limit = MAX_OWN_RULES["content"]
    for i in range(limit):
        await add(alice, "content", f"keyword{i}", {"pattern": f"keyword{i}"})
    too_many = await alice.put(
        _path("content", "one-more"), {"pattern": "one-more", "actions": ["notify"]}
    )
    assert_error(too_many, 400, "M_INVALID_PARAM")
    assert_error(await alice.get(_path("content", "one-more")), 404, "M_NOT_FOUND")
    assert len([r for r in (await all_rules(alice))["content"] if not r["default"]]) == limit
    # Replacing an existing rule, another kind, and another user are unaffected.
    await add(alice, "content", "keyword0", {"pattern": "changed"})
    await add(alice, "room", "!a:example.com")
    await add(bob, "content", "mine", {"pattern": "mine"})
    # Deleting one makes room again.
    assert_ok(await alice.delete(_path("content", "keyword1")))
    await add(alice, "content", "one-more", {"pattern": "one-more"})
