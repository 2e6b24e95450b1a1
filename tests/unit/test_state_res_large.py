"""State resolution in a 10,000-state-event room with a small fork.

Two branches differ in ten events: Alice demotes Bob, sets the topic and
three users join; concurrently Bob promotes a user, sets the topic, kicks a
user and two users join.  Alice's power levels sort first, so all of Bob's
power moves fail, and every join survives.  The resolution only touches the
fork (plus one walk of the auth DAG for the auth difference); run with ``-s``
to see how long it takes.
"""

from __future__ import annotations

import time

import pytest

from trioserver.events import RoomVersion, RoomVersions, StateKey, resolve_state_groups

from tests.unit.state_res_dag import (
    ALICE,
    BOB,
    JOIN,
    JOIN_RULES,
    LEAVE,
    POWER_LEVELS,
    TOPIC,
    EventFactory,
    Node,
    member,
    state,
)

STATE_EVENTS = 10_000
BASE = ("CREATE", "MA", "P0", "JR", "MB")


def user(i: int) -> str:
    return f"@user{i}:example.com"


class LargeRoom:
    """The room, the two state sets and the expected resolution."""

    def __init__(self, room_version: RoomVersion) -> None:
        factory = self.factory = EventFactory(room_version)
        create = ["CREATE"] if room_version.create_event_in_auth_events else []
        make = factory.make
        make(state("CREATE", ALICE, "m.room.create", "", {}))
        make(member("MA", ALICE, ALICE, JOIN), auth=create, prev=["CREATE"])
        make(power_levels("P0", {ALICE: 100, BOB: 50}), auth=[*create, "MA"], prev=["MA"])
        jr = {"join_rule": "public"}
        make(state("JR", ALICE, JOIN_RULES, "", jr), auth=[*create, "MA", "P0"], prev=["P0"])
        join_auth = [*create, "P0", "JR"]
        make(member("MB", BOB, BOB, JOIN), auth=join_auth, prev=["JR"])
        members = [f"J{i}" for i in range(STATE_EVENTS - len(BASE))]
        previous = "MB"
        for i, name in enumerate(members):
            make(member(name, user(i), user(i), JOIN), auth=join_auth, prev=[previous])
            previous = name
        base = factory.state_map(*BASE, *members)
        assert len(base) == STATE_EVENTS

        # Alice's branch.
        alice = [*create, "MA"]
        make(power_levels("PA", {ALICE: 100, BOB: 0}), auth=[*alice, "P0"], prev=[previous])
        make(state("TA", ALICE, TOPIC, "", {"topic": "a"}), auth=[*alice, "PA"], prev=["PA"])
        for n in range(3):
            who = user(20_000 + n)
            make(member(f"JA{n}", who, who, JOIN), auth=[*create, "PA", "JR"], prev=["TA"])
        # Bob's branch.
        bob = [*create, "MB"]
        promoted = {ALICE: 100, BOB: 50, user(0): 50}
        make(power_levels("PB", promoted, sender=BOB), auth=[*bob, "P0"], prev=[previous])
        make(state("TB", BOB, TOPIC, "", {"topic": "b"}), auth=[*bob, "PB"], prev=["PB"])
        kick = member("KB", BOB, user(1), LEAVE)
        make(kick, auth=[*bob, "PB", "J1"], prev=["TB"])
        for n in range(2):
            who = user(30_000 + n)
            make(member(f"JB{n}", who, who, JOIN), auth=[*create, "PB", "JR"], prev=["KB"])

        joins_a = ("JA0", "JA1", "JA2")
        joins_b = ("JB0", "JB1")
        self.state_sets = [
            {**base, **factory.state_map("PA", "TA", *joins_a)},
            {**base, **factory.state_map("PB", "TB", "KB", *joins_b)},
        ]
        self.expected = {**base, **factory.state_map("PA", "TA", *joins_a, *joins_b)}


def power_levels(name: str, users: dict[str, int], sender: str = ALICE) -> Node:
    return state(name, sender, POWER_LEVELS, "", {"users": users})


@pytest.fixture(
    scope="module",
    params=[RoomVersions.V11, RoomVersions.V12],
    ids=lambda version: f"v{version.identifier}",
)
def room(request: pytest.FixtureRequest) -> LargeRoom:
    room_version: RoomVersion = request.param
    return LargeRoom(room_version)


def test_large_room_with_a_small_fork(room: LargeRoom) -> None:
    factory = room.factory
    started = time.perf_counter()
    resolved = resolve_state_groups(factory.version, room.state_sets, factory.events)
    elapsed = time.perf_counter() - started
    print(
        f"v{factory.version.identifier}: resolved {len(resolved)} state events in {elapsed:.3f}s"
    )
    assert resolved == room.expected
    changed: dict[StateKey, str] = {
        key: factory.names[event_id]
        for key, event_id in resolved.items()
        if room.state_sets[0].get(key) != event_id
    }
    assert sorted(changed.values()) == ["JB0", "JB1"]
