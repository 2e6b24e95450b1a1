"""State resolution v2 building blocks, injected auth chains, and hostile input."""

from __future__ import annotations

from collections import Counter

import pytest

from trioserver.events import (
    CREATOR_POWER_LEVEL,
    RoomVersion,
    RoomVersions,
    StateKey,
    resolve_state_groups,
)
from trioserver.events.state_res_common import (
    AuthChains,
    auth_difference,
    conflicted_subgraph,
    separate,
)
from trioserver.events.state_res_v2 import mainline_sort, sender_power_level

from tests.unit.state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    JOIN,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    TOPIC,
    Dag,
    EventFactory,
    member,
    state,
)

V2 = RoomVersions.V2
CREATE = "m.room.create"


def key(name: str) -> StateKey:
    return (name, "")


# -- Unconflicted state map and conflicted state set (Ruma split_conflicted tests) --


def test_separate_unique_state_keys_are_all_conflicted() -> None:
    sets = [{key("a"): "0"}, {key("b"): "1"}, {key("c"): "2"}]
    assert separate(sets) == ({}, {key("a"): {"0"}, key("b"): {"1"}, key("c"): {"2"}})


def test_separate_same_key() -> None:
    sets = [{key("a"): "0"}, {key("a"): "1"}, {key("a"): "2"}]
    assert separate(sets) == ({}, {key("a"): {"0", "1", "2"}})


def test_separate_unconflicted_and_mixed() -> None:
    assert separate([{key("a"): "0"}] * 3) == ({key("a"): "0"}, {})
    sets = [
        {key("a"): "0"},
        {key("a"): "0", key("b"): "1"},
        {key("a"): "0", key("c"): "2"},
    ]
    assert separate(sets) == ({key("a"): "0"}, {key("b"): {"1"}, key("c"): {"2"}})


# -- Auth difference (Synapse AuthChainDifferenceTestCase) --------------------------


def chain_factory(links: dict[str, list[str]]) -> EventFactory:
    """State events of type ``name`` whose auth events are ``links[name]``."""
    factory = EventFactory(V2)
    for name, auth in links.items():
        factory.make(state(name, ALICE, name, "", {}), auth=auth)
    return factory


def index(factory: EventFactory) -> dict[str, frozenset[str]]:
    """Each event's auth chain (without itself), computed independently."""
    chains: dict[str, frozenset[str]] = {}
    for event_id in factory.events:
        seen: set[str] = set()
        pending = list(factory.events[event_id].auth_event_ids)
        while pending:
            auth_id = pending.pop()
            if auth_id not in seen:
                seen.add(auth_id)
                pending.extend(factory.events[auth_id].auth_event_ids)
        chains[event_id] = frozenset(seen)
    return chains


@pytest.mark.parametrize("injected", [False, True], ids=["walked", "injected"])
@pytest.mark.parametrize(
    ("links", "sets", "expected"),
    [
        ({"a": [], "b": ["a"], "c": ["b"]}, [("a", "b"), ("c",)], {"c"}),
        ({"a": [], "b": ["a"], "c": ["b"], "d": ["c"]}, [("a", "b"), ("c", "d")], {"c", "d"}),
        (
            {"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "e": ["c", "b"]},
            [("a", "b", "e"), ("c", "d")],
            {"d", "e"},
        ),
    ],
    ids=["simple", "chain", "branches"],
)
def test_auth_difference(
    links: dict[str, list[str]], sets: list[tuple[str, ...]], expected: set[str], injected: bool
) -> None:
    factory = chain_factory(links)
    state_sets = [factory.state_map(*names) for names in sets]
    unconflicted, _ = separate(state_sets)
    chains = AuthChains(V2, factory.events, index(factory).__getitem__ if injected else None)
    difference = auth_difference(state_sets, unconflicted, chains)
    assert {factory.names[event_id] for event_id in difference} == expected


def test_auth_difference_ignores_the_shared_chain() -> None:
    # Everything below the unconflicted "x" is in every chain; "y" and "z"
    # differ, and "w", below "y" only, is in the difference.
    factory = chain_factory({"r": [], "x": ["r"], "w": ["r"], "y": ["w", "x"], "z": ["x"]})
    state_sets = [factory.state_map("x", "y"), factory.state_map("x", "z")]
    unconflicted, _ = separate(state_sets)
    difference = auth_difference(state_sets, unconflicted, AuthChains(V2, factory.events))
    assert {factory.names[event_id] for event_id in difference} == {"y", "z", "w"}


# -- Conflicted state subgraph (MSC4297) ---------------------------------------------


def test_conflicted_subgraph_is_the_events_between_conflicted_events() -> None:
    factory = chain_factory(
        {"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "side": ["a"], "top": ["d"], "low": []}
    )
    factory.make(state("a2", ALICE, "a", "", {}), auth=["low"])
    conflicted = {factory.id("a2"), factory.id("d"), factory.id("a")}
    subgraph = conflicted_subgraph(conflicted, AuthChains(V2, factory.events))
    assert {factory.names[event_id] for event_id in subgraph} == {"a", "b", "c", "d", "a2"}


# -- Power levels of senders and mainline ordering -----------------------------------


@pytest.mark.parametrize(
    ("room_version", "creator"),
    [(RoomVersions.V10, CHARLIE), (RoomVersions.V11, ALICE)],
    ids=["v10-content-creator", "v11-sender"],
)
def test_sender_power_level_creator_definition(room_version: RoomVersion, creator: str) -> None:
    # Synapse test_get_power_level_for_sender: without power levels, the
    # creator (content.creator before v11, the sender from v11) has 100.
    factory = EventFactory(room_version)
    factory.make(state("CREATE", ALICE, CREATE, "", {"creator": CHARLIE}))
    factory.make(member("MA", ALICE, ALICE, JOIN), auth=["CREATE"])
    factory.make(state("P", ALICE, POWER_LEVELS, "", {"users": {BOB: 50}, "users_default": 10}))
    for user in (ALICE, BOB, CHARLIE):
        with_pl = factory.make(state(f"T{user}", user, TOPIC, "", {}), auth=["CREATE", "MA", "P"])
        without = factory.make(state(f"U{user}", user, TOPIC, "", {}), auth=["CREATE", "MA"])
        expected = {BOB: 50}.get(user, 10)
        assert sender_power_level(room_version, with_pl, factory.events) == expected
        expected = 100 if user == creator else 0
        assert sender_power_level(room_version, without, factory.events) == expected


def test_sender_power_level_v12_creators_are_infinite() -> None:
    factory = EventFactory(RoomVersions.V12)
    factory.make(state("CREATE", ALICE, CREATE, "", {"additional_creators": [BOB]}))
    factory.make(member("MA", ALICE, ALICE, JOIN))
    factory.make(state("P", ALICE, POWER_LEVELS, "", {"users": {CHARLIE: 70}}), auth=["MA"])
    levels = {ALICE: CREATOR_POWER_LEVEL, BOB: CREATOR_POWER_LEVEL, CHARLIE: 70}
    for user, level in levels.items():
        event = factory.make(state(f"T{user}", user, TOPIC, "", {}), auth=["MA", "P"])
        assert sender_power_level(factory.version, event, factory.events) == level


def test_mainline_sort_puts_events_outside_the_mainline_first() -> None:
    factory = EventFactory(V2)
    make = factory.make
    make(state("CREATE", ALICE, CREATE, "", {}))
    make(state("P1", ALICE, POWER_LEVELS, "", {}), auth=["CREATE"])
    make(state("P2", ALICE, POWER_LEVELS, "", {}), auth=["CREATE", "P1"])
    make(state("T2", ALICE, TOPIC, "", {}), auth=["CREATE", "P2"], ts=1)
    make(state("T1", ALICE, TOPIC, "", {}), auth=["CREATE", "P1"], ts=2)
    make(state("T0", ALICE, TOPIC, "", {}), auth=["CREATE"], ts=3)
    make(state("T1b", ALICE, TOPIC, "", {}), auth=["CREATE", "P1"], ts=1)
    ids = [factory.id(n) for n in ("T2", "T1", "T0", "T1b")]
    ordered = mainline_sort(ids, factory.id("P2"), factory.events)
    assert [factory.names[i] for i in ordered] == ["T0", "T1b", "T1", "T2"]
    # With no resolved power levels, every position is the same: by ts, then ID.
    unordered = mainline_sort(ids, None, factory.events)
    assert [factory.names[i] for i in unordered] == sorted(
        ("T2", "T1", "T0", "T1b"),
        key=lambda n: (factory.events[factory.id(n)].origin_server_ts, factory.id(n)),
    )


# -- Injected auth chains -------------------------------------------------------------


def test_injected_auth_chain_gives_the_same_result_and_is_memoised() -> None:
    nodes = [
        state("T1", ALICE, TOPIC, "", {}),
        state("PA1", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 50}}),
        state("T2", ALICE, TOPIC, "", {}),
        state("PA2", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 0}}),
        state("PB", BOB, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 50}}),
        state("T3", BOB, TOPIC, "", {}),
    ]
    edges = [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]]
    dag = Dag(V2, nodes, edges)
    factory = dag.factory
    chains = index(factory)
    calls: Counter[str] = Counter()

    def auth_chain(event_id: str) -> frozenset[str]:
        calls[event_id] += 1
        return chains[event_id]

    state_sets = [dag.state_at["PA2"], dag.state_at["T3"]]
    expected = resolve_state_groups(V2, state_sets, factory.events)
    assert resolve_state_groups(V2, state_sets, factory.events, auth_chain) == expected
    assert calls
    assert max(calls.values()) == 1


# -- Incomplete and hostile input -------------------------------------------------------


@pytest.mark.parametrize("room_version", [V2, RoomVersions.V12], ids=["v2", "v12"])
def test_trivial_inputs(room_version: RoomVersion) -> None:
    state_map = {(CREATE, ""): "$create:example.com", key(TOPIC): "$t:example.com"}
    assert resolve_state_groups(room_version, [], {}) == {}
    assert resolve_state_groups(room_version, [state_map], {}) == state_map
    assert resolve_state_groups(room_version, [state_map, dict(state_map)], {}) == state_map


def topic_fork() -> tuple[Dag, list[dict[StateKey, str]]]:
    """Alice's topic and power levels against Bob's concurrent ones."""
    nodes = [
        state("PA", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 50}}),
        state("TA", ALICE, TOPIC, "", {"topic": "a"}),
        state("PB", BOB, POWER_LEVELS, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 50}}),
        state("TB", BOB, TOPIC, "", {"topic": "b"}),
    ]
    dag = Dag(V2, nodes, [["END", "TA", "PA", "START"], ["END", "TB", "PB", "PA"]])
    return dag, [dag.state_at["TA"], dag.state_at["TB"]]


def test_missing_auth_events_are_treated_as_absent() -> None:
    dag, state_sets = topic_fork()
    factory = dag.factory
    full = factory.named(resolve_state_groups(V2, state_sets, factory.events))
    assert (full[key(POWER_LEVELS)], full[key(TOPIC)]) == ("PB", "TB")
    # Without PA, the conflicted PA is skipped and Bob's PB, which needs PA
    # to give him power, fails: the room is left without power levels.  TB
    # still passes: with no power levels in the state, its own auth events
    # (PB) are used ("Iterative auth checks").
    partial = {e: ev for e, ev in factory.events.items() if factory.names[e] != "PA"}
    resolved = factory.named(resolve_state_groups(V2, state_sets, partial))
    assert key(POWER_LEVELS) not in resolved
    assert resolved[key(TOPIC)] == "TB"
    assert resolved[(MEMBER, BOB)] == "IMB"


def test_missing_conflicted_events_are_skipped() -> None:
    dag, state_sets = topic_fork()
    factory = dag.factory
    events = {e: ev for e, ev in factory.events.items() if factory.names[e] not in ("TB", "PB")}
    resolved = factory.named(resolve_state_groups(V2, state_sets, events))
    assert resolved[key(TOPIC)] == "TA"
    assert resolved[key(POWER_LEVELS)] == "PA"


def test_state_map_entries_of_the_wrong_kind_are_skipped() -> None:
    dag, state_sets = topic_fork()
    factory = dag.factory
    # A topic key naming a power levels event, a join rules key naming a message.
    bogus = {
        **state_sets[1],
        key(TOPIC): factory.id("PB"),
        key(JOIN_RULES): factory.id("START"),
    }
    resolved = factory.named(resolve_state_groups(V2, [state_sets[0], bogus], factory.events))
    assert resolved[key(TOPIC)] == "TA"
    assert resolved[key(JOIN_RULES)] == "IJR"  # the only real candidate


def test_cyclic_auth_events_terminate() -> None:
    # v1/v2 event IDs are chosen by the sender, so a hostile server can make
    # two events cite each other.
    factory = EventFactory(V2)
    make = factory.make
    make(state("CREATE", ALICE, CREATE, "", {}))
    make(member("MA", ALICE, ALICE, JOIN), auth=["CREATE"])
    make(state("P0", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100}}), auth=["CREATE", "MA"])
    cycle_a, cycle_b = "$PX:example.com", "$PY:example.com"
    make(state("PX", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100}}), auth=["MA", cycle_b])
    make(state("PY", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100}}), auth=["MA", cycle_a])
    make(state("T", ALICE, TOPIC, "", {}), auth=["CREATE", "MA", cycle_a])
    base = factory.state_map("CREATE", "MA")
    state_sets = [
        {**base, **factory.state_map("PX", "T")},
        {**base, **factory.state_map("PY")},
        {**base, **factory.state_map("P0")},
    ]
    resolved = resolve_state_groups(V2, state_sets, factory.events)
    assert set(resolved) <= {(CREATE, ""), (MEMBER, ALICE), key(POWER_LEVELS), key(TOPIC)}
    assert resolved[(CREATE, "")] == factory.id("CREATE")


def test_auth_events_from_another_room_are_ignored() -> None:
    dag, state_sets = topic_fork()
    factory = dag.factory
    other = EventFactory(V2)
    other.room_id = "!elsewhere:example.com"
    # Bob's power in another room, with the same event ID as nothing here.
    stray = other.make(state("STRAY", ALICE, POWER_LEVELS, "", {"users": {BOB: 100}}), auth=[])
    tb = factory.events[factory.id("TB")]
    pdu = tb.get_pdu_json()
    pdu["event_id"] = "$TB2:example.com"
    pdu["auth_events"] = [[stray.event_id, {"sha256": "x"}], *pdu["auth_events"]]
    tb2 = type(tb).from_pdu(V2, pdu)
    events = {**factory.events, stray.event_id: stray, tb2.event_id: tb2}
    sets = [state_sets[0], {**state_sets[1], key(TOPIC): tb2.event_id}]
    resolved = resolve_state_groups(V2, sets, events)
    assert resolved[key(TOPIC)] == tb2.event_id  # authorised by this room's state only
    assert resolved[key(POWER_LEVELS)] == factory.id("PB")


def test_garbage_power_levels_content_is_rejected_not_raised() -> None:
    dag, state_sets = topic_fork()
    factory = dag.factory
    bad = factory.make(
        state("PBAD", ALICE, POWER_LEVELS, "", {"users": ["not", "an", "object"], "ban": "x"}),
        auth=[factory.id(n) for n in ("CREATE", "IMA", "PA")],
    )
    sets = [state_sets[0], {**state_sets[0], key(POWER_LEVELS): bad.event_id}]
    resolved = factory.named(resolve_state_groups(V2, sets, factory.events))
    assert resolved[key(POWER_LEVELS)] == "PA"
