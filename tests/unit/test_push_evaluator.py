"""The push rule evaluator and the server-default rules (spec "Push Rules"), without a server."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.push.evaluator import (
    PushContext,
    compile_push_rules,
    is_highlight,
    is_notify,
    prepare_event,
    tweak,
)
from trioserver.push.rules import (
    CONTENT,
    KINDS,
    OVERRIDE,
    ROOM,
    SENDER,
    UNDERRIDE,
    DefaultRuleChange,
    PushRule,
    build_rule_set,
)

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM_ID = "!room:example.org"
GROUP = PushContext(room_member_count=5, sender_power_level=0, notification_levels={})
DM = PushContext(room_member_count=2, sender_power_level=0, notification_levels={})
ADMIN = PushContext(room_member_count=5, sender_power_level=100, notification_levels={})

JsonDict = dict[str, Any]


def _message(body: str = "hello", **content: Any) -> JsonDict:
    return {
        "type": "m.room.message",
        "sender": BOB,
        "room_id": ROOM_ID,
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def _defaults_match(
    event: JsonDict, ctx: PushContext = GROUP, display_name: str | None = "Alice"
) -> str | None:
    compiled = compile_push_rules(build_rule_set(ALICE, [], {}))
    return compiled.matching_rule_id(event, ctx, user_id=ALICE, display_name=display_name)


def _user_rule_match(rule: PushRule, event: JsonDict, ctx: PushContext = GROUP) -> bool:
    compiled = compile_push_rules(build_rule_set(ALICE, [rule], {}))
    found = compiled.matching_rule_id(event, ctx, user_id=ALICE, display_name=None)
    return found == rule.rule_id


def _override(*conditions: JsonDict) -> PushRule:
    return PushRule(OVERRIDE, "mine", ("notify",), tuple(conditions))


# -- The default rules --------------------------------------------------------------------


def test_default_rule_order_matches_the_spec() -> None:
    body = build_rule_set(ALICE, [], {}).to_json()["global"]
    assert list(body) == list(KINDS)
    assert [r["rule_id"] for r in body["override"]] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.roomnotif",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [r["rule_id"] for r in body["content"]] == [".m.rule.contains_user_name"]
    assert body["room"] == body["sender"] == []
    assert [r["rule_id"] for r in body["underride"]][:5] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    master = body["override"][0]
    assert master == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "actions": [],
        "conditions": [],
    }


def test_defaults_name_the_user() -> None:
    body = build_rule_set(ALICE, [], {}).to_json()["global"]
    assert body["content"][0]["pattern"] == "alice"
    invite = next(r for r in body["override"] if r["rule_id"] == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": ALICE} in invite["conditions"]
    mention = next(r for r in body["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == ALICE


def test_user_rules_come_before_defaults_but_after_master() -> None:
    mine = _override({"kind": "event_match", "key": "type", "pattern": "m.room.message"})
    ids = [r.rule_id for r in build_rule_set(ALICE, [mine], {}).rules if r.kind == OVERRIDE]
    assert ids[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]


def test_plain_message_in_group_and_dm() -> None:
    assert _defaults_match(_message()) == ".m.rule.message"
    assert _defaults_match(_message(), DM) == ".m.rule.room_one_to_one"
    encrypted = {"type": "m.room.encrypted", "sender": BOB, "room_id": ROOM_ID, "content": {}}
    assert _defaults_match(encrypted) == ".m.rule.encrypted"
    assert _defaults_match(encrypted, DM) == ".m.rule.encrypted_room_one_to_one"


def test_notices_reactions_members_and_edits_are_silent() -> None:
    assert _defaults_match(_message(msgtype="m.notice")) == ".m.rule.suppress_notices"
    reaction = {"type": "m.reaction", "sender": BOB, "content": {}}
    assert _defaults_match(reaction) == ".m.rule.reaction"
    join = {"type": "m.room.member", "state_key": BOB, "content": {"membership": "join"}}
    assert _defaults_match(join) == ".m.rule.member_event"
    edit = _message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}})
    assert _defaults_match(edit, display_name=None) == ".m.rule.suppress_edits"


def test_invite_for_me_only_for_me() -> None:
    invite = {"type": "m.room.member", "content": {"membership": "invite"}, "state_key": ALICE}
    assert _defaults_match(invite) == ".m.rule.invite_for_me"
    other = {**invite, "state_key": BOB}
    assert _defaults_match(other) == ".m.rule.member_event"


def test_intentional_user_mention() -> None:
    event = _message("hi", **{"m.mentions": {"user_ids": [ALICE]}})
    assert _defaults_match(event) == ".m.rule.is_user_mention"
    others = _message("hi", **{"m.mentions": {"user_ids": [BOB]}})
    assert _defaults_match(others) == ".m.rule.message"


def test_room_mention_needs_permission() -> None:
    event = _message("hi", **{"m.mentions": {"room": True}})
    assert _defaults_match(event, ADMIN) == ".m.rule.is_room_mention"
    assert _defaults_match(event, GROUP) == ".m.rule.message"
    legacy = _message("@room: lunch")
    assert _defaults_match(legacy, ADMIN) == ".m.rule.roomnotif"
    assert _defaults_match(legacy, GROUP) == ".m.rule.message"


def test_notification_level_from_power_levels() -> None:
    event = _message("@room")
    low = PushContext(room_member_count=5, sender_power_level=10, notification_levels={"room": 10})
    assert _defaults_match(event, low) == ".m.rule.roomnotif"
    high = PushContext(5, 60, {"room": 75})
    assert _defaults_match(event, high) == ".m.rule.message"


def test_display_name_and_user_name_on_word_boundaries() -> None:
    assert _defaults_match(_message("hey ALICE, look")) == ".m.rule.contains_display_name"
    assert _defaults_match(_message("malice aforethought")) == ".m.rule.message"
    # The localpart (content rule) still matches when no display name is known.
    assert _defaults_match(_message("alice?"), display_name=None) == ".m.rule.contains_user_name"
    assert _defaults_match(_message("alices"), display_name=None) == ".m.rule.message"
    assert _defaults_match(_message("Dr. Who"), display_name="Dr. Who") == (
        ".m.rule.contains_display_name"
    )
    assert _defaults_match(_message("Dr  Who"), display_name="Dr. Who") == ".m.rule.message"


def test_tombstone_call_and_server_acl() -> None:
    tomb = {"type": "m.room.tombstone", "state_key": "", "content": {}}
    assert _defaults_match(tomb) == ".m.rule.tombstone"
    call = {"type": "m.call.invite", "content": {}}
    assert _defaults_match(call) == ".m.rule.call"
    acl = {"type": "m.room.server_acl", "state_key": "", "content": {}}
    assert _defaults_match(acl) == ".m.rule.room.server_acl"


def test_default_actions_highlight_and_sound() -> None:
    compiled = compile_push_rules(build_rule_set(ALICE, [], {}))
    mention = compiled.actions_for(_message("alice!"), GROUP, user_id=ALICE, display_name=None)
    assert is_notify(mention)
    assert is_highlight(mention)
    assert tweak(mention, "sound") == "default"
    plain = compiled.actions_for(_message(), GROUP, user_id=ALICE, display_name=None)
    assert is_notify(plain)
    assert not is_highlight(plain)
    call = compiled.actions_for(
        {"type": "m.call.invite", "content": {}}, GROUP, user_id=ALICE, display_name=None
    )
    assert tweak(call, "sound") == "ring"
    notice = _message(msgtype="m.notice")
    assert compiled.actions_for(notice, GROUP, user_id=ALICE, display_name=None) == []


def test_master_rule_silences_everything_when_enabled() -> None:
    changes = {(OVERRIDE, ".m.rule.master"): DefaultRuleChange(enabled=True)}
    compiled = compile_push_rules(build_rule_set(ALICE, [], changes))
    event = _message("alice")
    assert compiled.matching_rule_id(event, GROUP, user_id=ALICE, display_name=None) == (
        ".m.rule.master"
    )
    assert compiled.actions_for(event, GROUP, user_id=ALICE, display_name=None) == []


def test_disabled_default_and_changed_actions() -> None:
    changes = {
        (UNDERRIDE, ".m.rule.message"): DefaultRuleChange(enabled=False),
        (CONTENT, ".m.rule.contains_user_name"): DefaultRuleChange(actions=("dont_notify",)),
    }
    compiled = compile_push_rules(build_rule_set(ALICE, [], changes))
    assert compiled.matching_rule_id(_message(), GROUP, user_id=ALICE, display_name=None) is None
    actions = compiled.actions_for(_message("alice"), GROUP, user_id=ALICE, display_name=None)
    # dont_notify is a legacy no-op: the rule matches and nothing notifies.
    assert actions == []


# -- Conditions ---------------------------------------------------------------------------


def test_event_match_globs_are_case_insensitive_and_whole_value() -> None:
    rule = _override({"kind": "event_match", "key": "type", "pattern": "m.room.*"})
    assert _user_rule_match(rule, _message())
    rule = _override({"kind": "event_match", "key": "type", "pattern": "M.ROOM.MESSAGE"})
    assert _user_rule_match(rule, _message())
    rule = _override({"kind": "event_match", "key": "type", "pattern": "m.room"})
    assert not _user_rule_match(rule, _message())
    rule = _override({"kind": "event_match", "key": "type", "pattern": "m.room.messag?"})
    assert _user_rule_match(rule, _message())
    rule = _override({"kind": "event_match", "key": "type", "pattern": "m.room.messa?"})
    assert not _user_rule_match(rule, _message())


def test_event_match_on_body_is_by_word_with_globs() -> None:
    rule = PushRule(CONTENT, "kw", ("notify",), pattern="cake*")
    assert _user_rule_match(rule, _message("I like cakes!"))
    assert not _user_rule_match(rule, _message("pancakes"))
    rule = PushRule(CONTENT, "kw", ("notify",), pattern="тест")
    assert _user_rule_match(rule, _message("это тест."))


def test_event_match_only_matches_strings() -> None:
    rule = _override({"kind": "event_match", "key": "content.n", "pattern": "1"})
    assert not _user_rule_match(rule, _message(n=1))
    rule = _override({"kind": "event_match", "key": "content", "pattern": "*"})
    assert not _user_rule_match(rule, _message())


def test_dotted_keys_with_escapes() -> None:
    extra: JsonDict = {"m.foo": {"bar": "x"}, "m": {"foo": {"bar": "y"}}, "a\\b": "z"}
    event = _message("hello", **extra)
    escaped = _override({"kind": "event_property_is", "key": r"content.m\.foo.bar", "value": "x"})
    assert _user_rule_match(escaped, event)
    nested = _override({"kind": "event_property_is", "key": "content.m.foo.bar", "value": "y"})
    assert _user_rule_match(nested, event)
    slash = _override({"kind": "event_property_is", "key": r"content.a\\b", "value": "z"})
    assert _user_rule_match(slash, event)


@pytest.mark.parametrize(
    ("value", "expected", "matches"),
    [
        (True, True, True),
        (True, 1, False),
        (1, True, False),
        (1, 1, True),
        (None, None, True),
        ("a", "A", False),
        ([1], 1, False),
    ],
)
def test_event_property_is_is_exact(value: object, expected: object, matches: bool) -> None:
    rule = _override({"kind": "event_property_is", "key": "content.v", "value": expected})
    assert _user_rule_match(rule, _message(v=value)) is matches


def test_event_property_is_needs_the_key() -> None:
    rule = _override({"kind": "event_property_is", "key": "content.v", "value": None})
    assert not _user_rule_match(rule, _message())


def test_event_property_contains() -> None:
    rule = _override({"kind": "event_property_contains", "key": "content.tags", "value": "x"})
    assert _user_rule_match(rule, _message(tags=["a", "x"]))
    assert not _user_rule_match(rule, _message(tags=["X"]))
    assert not _user_rule_match(rule, _message(tags="x"))
    ints = _override({"kind": "event_property_contains", "key": "content.tags", "value": 1})
    assert not _user_rule_match(ints, _message(tags=[True]))
    assert _user_rule_match(ints, _message(tags=[1]))


@pytest.mark.parametrize(
    ("spec", "count", "matches"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<2", 1, True),
        ("<2", 2, False),
        (">2", 3, True),
        (">2", 2, False),
        ("<=2", 2, True),
        ("<=2", 3, False),
        (">=2", 2, True),
        (">=2", 1, False),
        ("two", 2, False),
        ("=2", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, matches: bool) -> None:
    rule = _override({"kind": "room_member_count", "is": spec})
    ctx = PushContext(room_member_count=count, sender_power_level=0, notification_levels={})
    assert _user_rule_match(rule, _message(), ctx) is matches


def test_sender_notification_permission_other_keys() -> None:
    rule = _override({"kind": "sender_notification_permission", "key": "custom"})
    assert not _user_rule_match(rule, _message(), PushContext(2, 49, {}))
    assert _user_rule_match(rule, _message(), PushContext(2, 50, {}))
    assert _user_rule_match(rule, _message(), PushContext(2, 5, {"custom": 5}))


def test_unknown_and_malformed_conditions_never_match() -> None:
    assert not _user_rule_match(_override({"kind": "org.example.unknown"}), _message())
    assert not _user_rule_match(_override({"kind": "event_match", "key": "type"}), _message())
    assert not _user_rule_match(_override({"kind": "room_member_count"}), _message())
    assert not _user_rule_match(
        _override({"kind": "event_property_is", "key": "type", "value": [1]}), _message()
    )


def test_no_conditions_always_match() -> None:
    assert _user_rule_match(_override(), _message())


def test_room_and_sender_rules() -> None:
    room = PushRule(ROOM, ROOM_ID, ("notify",))
    assert _user_rule_match(room, _message())
    assert not _user_rule_match(room, {**_message(), "room_id": "!other:example.org"})
    sender = PushRule(SENDER, BOB, ("notify",))
    assert _user_rule_match(sender, _message())
    assert not _user_rule_match(sender, {**_message(), "sender": ALICE})


def test_disabled_user_rules_are_skipped() -> None:
    rule = PushRule(OVERRIDE, "off", ("notify",), (), enabled=False)
    assert not _user_rule_match(rule, _message())


def test_a_prepared_event_serves_many_users() -> None:
    prepared = prepare_event(_message("bob and alice"))
    for user, name in ((ALICE, "alice"), ("@carol:example.org", "carol")):
        compiled = compile_push_rules(build_rule_set(user, [], {}))
        actions = compiled.actions_for(prepared, GROUP, user_id=user, display_name=None)
        assert is_highlight(actions) is (name == "alice")


def test_actions_helpers() -> None:
    assert not is_notify([])
    assert is_highlight(["notify", {"set_tweak": "highlight"}])
    assert not is_highlight(["notify", {"set_tweak": "highlight", "value": False}])
    assert tweak(["notify"], "sound") is None


def test_deeply_nested_events_do_not_overflow() -> None:
    content: JsonDict = {}
    inner = content
    for _ in range(5000):
        inner["x"] = {}
        inner = inner["x"]
    assert _defaults_match(_message(**content)) == ".m.rule.message"


# -- The spec's own examples --------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "matches"),
    [("Lunch plans", True), ("LUNCH", True), (" lunch", False), ("lunc", False), (None, False)],
)
def test_spec_event_match_example(topic: str | None, matches: bool) -> None:
    rule = _override({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"})
    event = {"type": "m.room.topic", "state_key": "", "content": {"topic": topic}}
    assert _user_rule_match(rule, event) is matches


@pytest.mark.parametrize(
    ("body", "matches"),
    [
        ("An example event.", True),
        ("exple", True),
        ("An exciting triple-whammy", True),
        ("examples", False),
        ("an_example", False),
    ],
)
def test_spec_content_body_example(body: str, matches: bool) -> None:
    rule = PushRule(CONTENT, "ex", ("notify",), pattern="ex*ple")
    assert _user_rule_match(rule, _message(body)) is matches


@pytest.mark.parametrize(("value", "matches"), [(True, True), ("true", False), (1, False)])
def test_spec_event_property_is_example(value: object, matches: bool) -> None:
    rule = _override({"kind": "event_property_is", "key": r"content.m\.federate", "value": True})
    event = {"type": "m.room.create", "state_key": "", "content": {"m.federate": value}}
    assert _user_rule_match(rule, event) is matches


def test_spec_event_property_contains_example() -> None:
    rule = _override(
        {"kind": "event_property_contains", "key": "content.alt_aliases", "value": "#r:x.org"}
    )
    assert _user_rule_match(rule, _message(alt_aliases=["#s:x.org", "#r:x.org"]))
    assert not _user_rule_match(rule, _message(alt_aliases=[":x.org"]))


def test_word_boundaries_are_ascii_as_the_spec_defines() -> None:
    # Anything outside [A-Za-z0-9_] separates words; case folding is still Unicode.
    rule = PushRule(CONTENT, "kw", ("notify",), pattern="ÉTÉ")
    assert _user_rule_match(rule, _message("bel été!"))
    assert _defaults_match(_message("alice_x"), display_name=None) == ".m.rule.message"
    assert _defaults_match(_message("alice-x"), display_name=None) == ".m.rule.contains_user_name"


def test_m_mentions_turns_off_the_legacy_mention_rules() -> None:
    # Spec v1.7: the body-based rules apply only to events without m.mentions.
    event = _message("alice, @room", **{"m.mentions": {}})
    assert _defaults_match(event, ADMIN) == ".m.rule.message"
    mentioned = _message("hello", **{"m.mentions": {"user_ids": [ALICE]}})
    assert _defaults_match(mentioned, ADMIN) == ".m.rule.is_user_mention"
    # A user's own keyword rules still apply.
    keyword = PushRule(CONTENT, "kw", ("notify",), pattern="alice")
    assert _user_rule_match(keyword, event)
