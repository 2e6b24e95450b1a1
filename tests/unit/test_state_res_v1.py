"""State resolution v1 (room version 1).

The DAG cases are Synapse's ``tests/test_state.py`` branch tests, rebuilt on
:class:`~tests.unit.state_res_dag.Dag` without the initial room: each names
the state at the last event.  Depths are given where the case depends on
them, as in the originals.
"""

from __future__ import annotations

from trioserver.events import RoomVersions, resolve_state_groups

from tests.unit.state_res_dag import (
    ALICE,
    BAN,
    BOB,
    CHARLIE,
    JOIN,
    JOIN_RULES,
    POWER_LEVELS,
    Dag,
    EventFactory,
    Node,
    member,
    state,
)

V1 = RoomVersions.V1
NAME = "m.room.name"
CREATE = "m.room.create"


def names_at(dag: Dag, name: str) -> set[str]:
    return set(dag.factory.named(dag.state_at[name]).values())


def msg(name: str, depth: int | None = None) -> Node:
    return Node(name, ALICE, "m.room.message", None, {}, depth)


def test_branch_no_conflict() -> None:
    nodes = [
        Node("START", ALICE, CREATE, "", {}, 1),
        msg("A", 2),
        msg("B", 3),
        Node("C", ALICE, NAME, "", {}, 3),
        msg("D", 4),
    ]
    edges = [["D", "B", "A", "START"], ["D", "C", "A"]]
    dag = Dag(V1, nodes, edges, initial=False)
    assert names_at(dag, "D") == {"START", "C"}


def test_branch_basic_conflict() -> None:
    # Two names: the deeper one wins.
    nodes = [
        Node("START", ALICE, CREATE, "", {}, 1),
        Node("A", ALICE, "m.room.member", ALICE, JOIN, 2),
        Node("B", ALICE, NAME, "", {}, 3),
        Node("C", ALICE, NAME, "", {}, 4),
        msg("D", 5),
    ]
    edges = [["D", "B", "A", "START"], ["D", "C", "A"]]
    dag = Dag(V1, nodes, edges, initial=False)
    assert names_at(dag, "D") == {"START", "A", "C"}


def test_branch_have_banned_conflict() -> None:
    # Bob's name change (as deep as the ban) fails: Bob never joined.
    nodes = [
        Node("START", ALICE, CREATE, "", {}, 1),
        Node("A", ALICE, "m.room.member", ALICE, JOIN, 2),
        Node("B", ALICE, NAME, "", {}, 3),
        Node("C", ALICE, "m.room.member", BOB, BAN, 4),
        Node("D", BOB, NAME, "", {}, 4),
        msg("E", 5),
    ]
    edges = [["E", "C", "B", "A", "START"], ["E", "D", "B"]]
    dag = Dag(V1, nodes, edges, initial=False)
    assert names_at(dag, "E") == {"START", "A", "B", "C"}


def test_branch_have_perms_conflict() -> None:
    # Power levels resolve first: B (deeper, allowed) wins, and Bob's name
    # change C is then below the m.room.name level of 50.
    nodes = [
        state("A1", ALICE, CREATE, "", {}),
        member("A2", ALICE, ALICE, JOIN),
        member("A3", BOB, BOB, JOIN),
        state(
            "A4", ALICE, POWER_LEVELS, "", {"events": {NAME: 50}, "users": {ALICE: 100, BOB: 60}}
        ),
        state("A5", ALICE, NAME, "", {}),
        state("B", ALICE, POWER_LEVELS, "", {"events": {NAME: 50}, "users": {BOB: 30}}),
        state("C", BOB, NAME, "", {}),
        msg("D"),
    ]
    edges = [["D", "B", "A5", "A4", "A3", "A2", "A1"], ["D", "C", "A5"]]
    dag = Dag(V1, nodes, edges, initial=False)
    assert names_at(dag, "D") == {"A1", "A2", "A3", "A5", "B"}


def test_power_levels_stop_at_the_first_rejected_change() -> None:
    # Ascending depth: Alice's P1, Bob's P2, Alice's P3.  P2 fails on top of
    # P1 (Bob has no power), so the walk stops at P1, and P3, which would
    # pass, is never considered.
    factory = EventFactory(V1)
    make = factory.make
    make(state("CREATE", ALICE, CREATE, "", {}), depth=1)
    make(member("MA", ALICE, ALICE, JOIN), depth=2)
    make(member("MB", BOB, BOB, JOIN), depth=3)
    make(state("P1", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100}}), depth=4)
    make(state("P2", BOB, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 0}}), depth=5)
    make(state("P3", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, CHARLIE: 5}}), depth=6)
    common = ("CREATE", "MA", "MB")
    state_sets = [factory.state_map(*common, name) for name in ("P3", "P1", "P2")]
    resolved = resolve_state_groups(V1, state_sets, factory.events)
    assert factory.named(resolved) == factory.named(factory.state_map(*common, "P1"))


def test_members_resolve_against_the_resolved_power_levels() -> None:
    # Bob's ban of Charlie needs the ban level, 55.  Only P2, the deeper power
    # levels Alice sent concurrently, gives it to him; it resolves first, and
    # the member pass sees it.
    factory = EventFactory(V1)
    make = factory.make
    make(state("CREATE", ALICE, CREATE, "", {}), depth=1)
    make(member("MA", ALICE, ALICE, JOIN), depth=2)
    make(
        state("P1", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 50}, "ban": 55}), depth=3
    )
    make(state("JR", ALICE, JOIN_RULES, "", {"join_rule": "public"}), depth=4)
    make(member("MB", BOB, BOB, JOIN), depth=5)
    make(member("MC", CHARLIE, CHARLIE, JOIN), depth=6)
    make(
        state("P2", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 60}, "ban": 55}), depth=7
    )
    make(member("BAN", BOB, CHARLIE, BAN), depth=7)
    common = ("CREATE", "MA", "JR", "MB")
    state_sets = [factory.state_map(*common, "P2", "MC"), factory.state_map(*common, "P1", "BAN")]
    resolved = resolve_state_groups(V1, state_sets, factory.events)
    assert factory.named(resolved) == factory.named(factory.state_map(*common, "P2", "BAN"))


def test_normal_events_fall_back_to_the_shallowest() -> None:
    # No candidate passes (Bob is not joined): the least deep one is kept.
    factory = EventFactory(V1)
    factory.make(state("CREATE", ALICE, CREATE, "", {}), depth=1)
    factory.make(state("N1", BOB, NAME, "", {}), depth=2)
    factory.make(state("N2", BOB, NAME, "", {}), depth=3)
    state_sets = [factory.state_map("CREATE", "N1"), factory.state_map("CREATE", "N2")]
    resolved = resolve_state_groups(V1, state_sets, factory.events)
    assert factory.named(resolved)[(NAME, "")] == "N1"


def test_keys_missing_from_some_sets_are_unconflicted() -> None:
    # v1 conflicts only on *different* events for a key (unlike v2); such
    # entries are kept as given, even when their events are unknown.
    factory = EventFactory(V1)
    factory.make(state("CREATE", ALICE, CREATE, "", {}), depth=1)
    state_sets = [
        factory.state_map("CREATE"),
        {**factory.state_map("CREATE"), (NAME, ""): "$unknown:example.com"},
    ]
    resolved = resolve_state_groups(V1, state_sets, factory.events)
    assert resolved == state_sets[1]


def test_unknown_candidates_are_skipped() -> None:
    factory = EventFactory(V1)
    factory.make(state("CREATE", ALICE, CREATE, "", {}), depth=1)
    factory.make(state("N1", ALICE, NAME, "", {}), depth=2)
    base = factory.state_map("CREATE")
    known = {**base, (NAME, ""): factory.id("N1")}
    unknown = {**base, (NAME, ""): "$gone:example.com"}
    lost = {**base, (NAME, ""): "$also-gone:example.com"}
    assert resolve_state_groups(V1, [known, unknown], factory.events) == known
    assert resolve_state_groups(V1, [unknown, lost], factory.events) == base


def test_trivial_inputs() -> None:
    state_map = {(CREATE, ""): "$create:example.com"}
    assert resolve_state_groups(V1, [], {}) == {}
    assert resolve_state_groups(V1, [state_map], {}) == state_map
    assert resolve_state_groups(V1, [state_map, state_map], {}) == state_map
