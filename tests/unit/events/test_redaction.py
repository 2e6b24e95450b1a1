"""The redaction algorithm of each room version, as tables of input -> output."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import KNOWN_ROOM_VERSIONS, RoomVersion, prune_event_dict

V = KNOWN_ROOM_VERSIONS
ALL = [str(n) for n in range(1, 13)]


def versions(first: int, last: int = 12) -> list[str]:
    return [str(n) for n in range(first, last + 1)]


BASE: dict[str, Any] = {
    "event_id": "$e:hs.test",
    "room_id": "!r:hs.test",
    "sender": "@u:hs.test",
    "hashes": {"sha256": "abc"},
    "signatures": {"hs.test": {"ed25519:1": "sig"}},
    "depth": 5,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "origin_server_ts": 1234,
    # Keys protected only before v11 (MSC2176):
    "origin": "hs.test",
    "membership": "join",
    "prev_state": [],
    # Never protected:
    "unsigned": {"age_ts": 1, "replaces_state": "$x", "redacted_because": {}},
    "redacts": "$target",
    "other_key": "dropped",
}
ALWAYS_KEPT = {
    "event_id",
    "room_id",
    "sender",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
    "type",
    "content",
    "state_key",
}
PRE_V11_KEPT = {"origin", "membership", "prev_state"}


@pytest.mark.parametrize("version", ALL)
def test_top_level_keys(version: str) -> None:
    event = {**BASE, "type": "m.room.message", "state_key": "", "content": {"body": "x"}}
    pruned = prune_event_dict(V[version], event)
    expected = ALWAYS_KEPT | (PRE_V11_KEPT if int(version) < 11 else set())
    assert set(pruned) == expected
    assert pruned["content"] == {}
    assert "unsigned" not in pruned


FULL_CONTENT: dict[str, dict[str, Any]] = {
    "m.room.member": {
        "membership": "join",
        "join_authorised_via_users_server": "@a:hs.test",
        "displayname": "A",
        "avatar_url": "mxc://x/y",
        "reason": "r",
        "third_party_invite": {
            "display_name": "d",
            "signed": {"mxid": "@a:hs.test", "token": "t"},
        },
    },
    "m.room.create": {
        "creator": "@u:hs.test",
        "room_version": "1",
        "m.federate": False,
        "predecessor": {"room_id": "!old:hs.test"},
        "type": "m.space",
        "additional_creators": ["@b:hs.test"],
    },
    "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
    "m.room.power_levels": {
        "ban": 50,
        "events": {"m.room.name": 50},
        "events_default": 0,
        "invite": 0,
        "kick": 50,
        "notifications": {"room": 50},
        "redact": 50,
        "state_default": 50,
        "users": {"@u:hs.test": 100},
        "users_default": 0,
        "other": 1,
    },
    "m.room.history_visibility": {"history_visibility": "shared", "other": 1},
    "m.room.aliases": {"aliases": ["#a:hs.test"], "other": 1},
    "m.room.redaction": {"redacts": "$target", "reason": "spam"},
    "m.room.message": {"body": "hello", "msgtype": "m.text"},
    "m.room.topic": {"topic": "t"},
}
PL_V1 = {
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
}

# (event type, versions, kept content keys)
CONTENT_CASES: list[tuple[str, list[str], set[str]]] = [
    ("m.room.member", versions(1, 8), {"membership"}),
    ("m.room.member", versions(9, 10), {"membership", "join_authorised_via_users_server"}),
    (
        "m.room.member",
        versions(11),
        {"membership", "join_authorised_via_users_server", "third_party_invite"},
    ),
    ("m.room.create", versions(1, 10), {"creator"}),
    ("m.room.create", versions(11), set(FULL_CONTENT["m.room.create"])),
    ("m.room.join_rules", versions(1, 7), {"join_rule"}),
    ("m.room.join_rules", versions(8), {"join_rule", "allow"}),
    ("m.room.power_levels", versions(1, 10), PL_V1),
    ("m.room.power_levels", versions(11), PL_V1 | {"invite"}),
    ("m.room.history_visibility", ALL, {"history_visibility"}),
    ("m.room.aliases", versions(1, 5), {"aliases"}),
    ("m.room.aliases", versions(6), set()),
    ("m.room.redaction", versions(1, 10), set()),
    ("m.room.redaction", versions(11), {"redacts"}),
    ("m.room.message", ALL, set()),
    ("m.room.topic", ALL, set()),
]


@pytest.mark.parametrize(
    ("event_type", "version", "kept"),
    [pytest.param(t, v, kept, id=f"{t}-v{v}") for t, vs, kept in CONTENT_CASES for v in vs],
)
def test_content_keys(event_type: str, version: str, kept: set[str]) -> None:
    content = FULL_CONTENT[event_type]
    event = {**BASE, "type": event_type, "state_key": "", "content": content}
    pruned = prune_event_dict(V[version], event)
    expected = {key: content[key] for key in kept}
    if event_type == "m.room.member" and int(version) >= 11:
        # v11: only the "signed" part of third_party_invite survives.
        expected["third_party_invite"] = {"signed": content["third_party_invite"]["signed"]}
    assert pruned["content"] == expected


@pytest.mark.parametrize(
    ("invite", "expected"),
    [
        ({"display_name": "d"}, {"third_party_invite": {}}),
        ("not an object", {}),
        ({"signed": {"token": "t"}}, {"third_party_invite": {"signed": {"token": "t"}}}),
    ],
)
def test_v11_third_party_invite_edge_cases(invite: object, expected: dict[str, Any]) -> None:
    event = {**BASE, "type": "m.room.member", "content": {"third_party_invite": invite}}
    assert prune_event_dict(V["11"], event)["content"] == expected


def test_pruning_is_idempotent_and_does_not_mutate_input() -> None:
    for version in V.values():
        event = {
            **BASE,
            "type": "m.room.power_levels",
            "content": FULL_CONTENT["m.room.power_levels"],
        }
        snapshot = repr(event)
        once = prune_event_dict(version, event)
        assert prune_event_dict(version, once) == once
        assert repr(event) == snapshot
        once["content"]["users"]["@x:hs.test"] = 1
        assert "@x:hs.test" not in FULL_CONTENT["m.room.power_levels"]["users"]


@pytest.mark.parametrize("content", [None, "string", ["list"]])
def test_non_object_content_becomes_empty(content: object) -> None:
    event = {**BASE, "type": "m.room.member", "content": content}
    assert prune_event_dict(V["10"], event)["content"] == {}


def test_missing_content_is_added() -> None:
    version: RoomVersion = V["9"]
    assert prune_event_dict(version, {"type": "m.room.message"}) == {
        "type": "m.room.message",
        "content": {},
    }
