"""The pure rules of room upgrades: power levels, canonical aliases, m.direct."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.errors import MatrixError
from trioserver.events import RoomVersions
from trioserver.handlers.room_upgrade_state import (
    direct_with_room,
    fixup_power_levels,
    initial_power_levels,
    moved_canonical_alias,
    parse_additional_creators,
    restricted_power_levels,
)


def test_fixup_turns_stringy_levels_into_integers_and_drops_junk() -> None:
    content = {"ban": "50", "kick": " 20 ", "users": {"@a:x": "100", "@b:x": [1]}, "bad": 1.5}
    assert fixup_power_levels(content) == {"ban": 50, "kick": 20, "users": {"@a:x": 100}}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({}, {"events_default": 50, "invite": 50}),
        ({"users_default": 80}, {"users_default": 80, "events_default": 81, "invite": 81}),
        ({"events_default": 60, "invite": 70}, None),
    ],
)
def test_restricted_power_levels(content: dict[str, Any], expected: Any) -> None:
    assert restricted_power_levels(content) == expected


def test_the_upgrader_is_raised_to_the_highest_state_level() -> None:
    old = {"users": {"@mod:x": 50}, "events": {"m.room.tombstone": 50, "m.room.power_levels": 100}}
    content = initial_power_levels(old, "@mod:x", RoomVersions.V10, ["@mod:x"])
    assert content["users"] == {"@mod:x": 100}
    # A user already above it keeps their level.
    high = initial_power_levels({"users": {"@a:x": 500}}, "@a:x", RoomVersions.V10, ["@a:x"])
    assert high["users"] == {"@a:x": 500}


def test_v12_creators_leave_the_users_map() -> None:
    old = {"users": {"@a:x": 100, "@b:x": 50, "@c:x": 0}}
    content = initial_power_levels(old, "@a:x", RoomVersions.V12, ["@a:x", "@b:x"])
    assert content["users"] == {"@c:x": 0}


def test_only_local_aliases_move() -> None:
    content = {"alias": "#a:here", "alt_aliases": ["#b:here", "#c:there"]}
    old, new = moved_canonical_alias(content, ":here")
    assert old == {"alt_aliases": ["#c:there"]}
    assert new == {"alias": "#a:here", "alt_aliases": ["#b:here"]}
    old, new = moved_canonical_alias({"alias": "#r:there"}, ":here")
    assert old == {"alias": "#r:there"}
    assert new == {}


def test_direct_chats_list_the_new_room_next_to_the_old() -> None:
    direct = {"@b:x": ["!old:x", "!other:x"], "@c:x": ["!other:x"]}
    assert direct_with_room(direct, "!old:x", "!new:x") == {
        "@b:x": ["!old:x", "!other:x", "!new:x"],
        "@c:x": ["!other:x"],
    }
    assert direct_with_room({"@c:x": ["!other:x"]}, "!old:x", "!new:x") is None


@pytest.mark.parametrize("raw", ["@a:x", ["not a user"], [5], ["@" + "a" * 260 + ":x"]])
def test_additional_creators_must_be_user_ids(raw: Any) -> None:
    with pytest.raises(MatrixError):
        parse_additional_creators(raw)
    assert parse_additional_creators(["@a:x"]) == ["@a:x"]
