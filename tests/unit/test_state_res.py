"""State resolution v2: the well-known test cases of the spec's implementations.

The cases are those of Synapse ``tests/state/test_v2.py`` and Ruma's
state-res tests, rebuilt on :class:`~tests.unit.state_res_dag.Dag`: each
builds a DAG on top of the initial room (Alice creator and admin, public
join rule, Bob, Charlie and Zara joined) and checks the state at END against
the state at START.  They run for room versions with v1-style event IDs (2),
hash event IDs (6, 11) and v2.1 with infinite creator power (12).
"""

from __future__ import annotations

import pytest

from trioserver.events import RoomVersion, RoomVersions, resolve_state_groups
from trioserver.events.state_res_v2 import lexicographical_topological_sort

from tests.unit.state_res_dag import (
    ALICE,
    BAN,
    BOB,
    CHARLIE,
    ELLA,
    EVELYN,
    JOIN,
    JOIN_RULES,
    LEAVE,
    MEMBER,
    POWER_LEVELS,
    TOPIC,
    ZARA,
    Dag,
    EventFactory,
    Node,
    member,
    message,
    state,
)

CREATE_TYPE = "m.room.create"

V2_VERSIONS = pytest.mark.parametrize(
    "room_version",
    [RoomVersions.V2, RoomVersions.V6, RoomVersions.V11, RoomVersions.V12],
    ids=lambda version: f"v{version.identifier}",
)


def check(
    room_version: RoomVersion,
    nodes: list[Node],
    edges: list[list[str]],
    expected: list[str],
) -> Dag:
    """Build the DAG and assert the state changed at END is ``expected`` (names)."""
    dag = Dag(room_version, nodes, edges)
    wanted, actual = dag.changed_at_end(expected)
    assert actual == wanted
    return dag


def topic(name: str, sender: str) -> Node:
    return state(name, sender, TOPIC, "", {})


def power_levels(name: str, sender: str, users: dict[str, int], **extra: object) -> Node:
    return state(name, sender, POWER_LEVELS, "", {"users": users, **extra})


@V2_VERSIONS
def test_ban_vs_power_levels(room_version: RoomVersion) -> None:
    # Alice bans Bob while Bob, concurrently, changes the power levels.  The
    # ban is ordered first (Alice has more power), so Bob's change fails.
    nodes = [
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MA", ALICE, ALICE, JOIN),
        member("MB", ALICE, BOB, BAN),
        power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
    ]
    edges = [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]]
    check(room_version, nodes, edges, ["PA", "MA", "MB"])


@V2_VERSIONS
def test_join_rule_evasion(room_version: RoomVersion) -> None:
    # Evelyn joins concurrently with the room becoming private: the join
    # rules change is a power event, applied first, and her join then fails.
    nodes = [
        state("JR", ALICE, JOIN_RULES, "", {"join_rule": "private"}),
        member("ME", EVELYN, EVELYN, JOIN),
    ]
    edges = [["END", "JR", "START"], ["END", "ME", "START"]]
    check(room_version, nodes, edges, ["JR"])


@V2_VERSIONS
def test_offtopic_power_levels(room_version: RoomVersion) -> None:
    # A chain of power level changes on one branch wins over the older state.
    nodes = [
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        power_levels("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
        power_levels("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
    ]
    edges = [["END", "PC", "PB", "PA", "START"], ["END", "PA"]]
    check(room_version, nodes, edges, ["PC"])


@V2_VERSIONS
def test_topic_basic(room_version: RoomVersion) -> None:
    # Alice demotes Bob (PA2) while Bob re-grants himself (PB) and sets T3:
    # Alice's change wins, and T3, in the PB epoch, loses to T2.
    nodes = [
        topic("T1", ALICE),
        power_levels("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power_levels("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
    ]
    edges = [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]]
    check(room_version, nodes, edges, ["PA2", "T2"])


@V2_VERSIONS
def test_topic_reset(room_version: RoomVersion) -> None:
    # Bob's topic T2 is undone when he is banned concurrently with a branch
    # that only knows T1.
    nodes = [
        topic("T1", ALICE),
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", BOB),
        member("MB", ALICE, BOB, BAN),
    ]
    edges = [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]]
    check(room_version, nodes, edges, ["T1", "MB", "PA"])


@V2_VERSIONS
def test_topic_with_power_level_fork(room_version: RoomVersion) -> None:
    # As test_topic_basic, with a message merging the branches and a later
    # topic by Alice, which wins.
    nodes = [
        topic("T1", ALICE),
        power_levels("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power_levels("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        message("MZ1", ZARA),
        topic("T4", ALICE),
    ]
    edges = [
        ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "MZ1", "T3", "PB", "PA1"],
    ]
    check(room_version, nodes, edges, ["T4", "PA2"])


@V2_VERSIONS
def test_mainline_sort(room_version: RoomVersion) -> None:
    # T3 wins although T4 was sent later: T4 points at an older power levels
    # event of the mainline (PA1 via PB) than T3 (PA2).
    nodes = [
        topic("T1", ALICE),
        power_levels("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power_levels("PA2", ALICE, {ALICE: 100, BOB: 50}, events={POWER_LEVELS: 100}),
        power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        topic("T4", ALICE),
    ]
    edges = [
        ["END", "T3", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "T4", "PB", "PA1"],
    ]
    check(room_version, nodes, edges, ["T3", "PA2"])


@V2_VERSIONS
def test_ban_with_auth_chains(room_version: RoomVersion) -> None:
    # Ella joins although banned (the event passed on its own branch only
    # because its state was wrong); the ban, a power event, wins.
    nodes = [
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MB", ALICE, ELLA, BAN),
        member("IME", ELLA, ELLA, JOIN),
    ]
    edges = [["END", "MB", "PA", "START"], ["END", "IME", "MB"]]
    check(room_version, nodes, edges, ["PA", "MB"])


@V2_VERSIONS
def test_ban_with_explicit_auth_chains(room_version: RoomVersion) -> None:
    # Ruma ban_with_auth_chains2: two state sets built by hand.  The ban cites
    # PB, a power levels event neither state set holds: it is in the auth
    # difference, replayed before the ban, and the unconflicted PA wins back
    # its key at the end.
    factory = EventFactory(room_version)
    make = factory.make
    # v12 never lists the create event: the room ID implies it.
    create = ["CREATE"] if room_version.create_event_in_auth_events else []
    make(state("CREATE", ALICE, CREATE_TYPE, "", {}))
    make(member("IMA", ALICE, ALICE, JOIN), auth=create, prev=["CREATE"])
    make(power_levels("IPOWER", ALICE, {ALICE: 100}), auth=[*create, "IMA"], prev=["IMA"])
    make(state("IJR", ALICE, JOIN_RULES, "", {"join_rule": "public"}), auth=[*create, "IMA"])
    for name, user in (("IMB", BOB), ("IMC", CHARLIE)):
        make(member(name, user, user, JOIN), auth=[*create, "IJR", "IPOWER"], prev=["IJR"])
    pa_auth = [*create, "IMA", "IPOWER"]
    make(power_levels("PA", ALICE, {ALICE: 100, BOB: 50}), auth=pa_auth, prev=["IMC"])
    make(power_levels("PB", ALICE, {ALICE: 100, BOB: 50}), auth=pa_auth, prev=["IMC"])
    make(member("MB", ALICE, ELLA, BAN), auth=[*create, "IMA", "PB"], prev=["PA"])
    make(member("IME", ELLA, ELLA, JOIN), auth=[*create, "IJR", "PA"], prev=["MB"])
    common = ("CREATE", "IJR", "IMA", "IMB", "IMC", "PA")
    resolved = resolve_in(factory, [(*common, "MB"), (*common, "IME")])
    assert resolved == factory.named(factory.state_map(*common, "MB"))


def resolve_in(factory: EventFactory, sets: list[tuple[str, ...]]) -> dict[tuple[str, str], str]:
    """Resolve state sets given by event names; return the result by name."""
    state_sets = [factory.state_map(*names) for names in sets]
    return factory.named(resolve_state_groups(factory.version, state_sets, factory.events))


@V2_VERSIONS
def test_concurrent_joins_merge(room_version: RoomVersion) -> None:
    # Synapse SimpleParamStateTestCase: two joins on two branches both stay.
    nodes = [member("JB", ELLA, ELLA, JOIN), member("JE", EVELYN, EVELYN, JOIN)]
    dag = check(
        room_version, nodes, [["END", "JB", "START"], ["END", "JE", "START"]], ["JB", "JE"]
    )
    end = dag.factory.named(dag.state_at["END"])
    assert end[(MEMBER, ELLA)] == "JB"
    assert end[(MEMBER, EVELYN)] == "JE"


@V2_VERSIONS
def test_power_order_prefers_the_more_powerful_sender(room_version: RoomVersion) -> None:
    # Bob (50) bans Charlie while Alice concurrently raises the ban level to
    # 75.  The ban was sent first, but Alice's change sorts first by power
    # level, so the ban fails and Charlie stays.
    nodes = [
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MC", BOB, CHARLIE, BAN),
        power_levels("PA2", ALICE, {ALICE: 100, BOB: 50}, ban=75),
    ]
    edges = [["END", "PA2", "PA", "START"], ["END", "MC", "PA"]]
    dag = check(room_version, nodes, edges, ["PA2"])
    mc, pa2 = (dag.factory.events[dag.factory.id(name)] for name in ("MC", "PA2"))
    assert mc.origin_server_ts < pa2.origin_server_ts


def test_lexicographical_topological_sort() -> None:
    # Synapse LexicographicalTestCase / Ruma test_reverse_topological_power_sort.
    graph = {"l": {"o"}, "m": {"n", "o"}, "n": {"o"}, "o": set(), "p": {"o"}}
    assert lexicographical_topological_sort(graph, lambda n: (0, 0, n)) == list("olnmp")


def test_lexicographical_topological_sort_uses_the_key_among_ready_nodes() -> None:
    graph = {"a": set(), "b": set(), "c": {"a"}}
    by_power = {"a": (-10, 5, "a"), "b": (-50, 9, "b"), "c": (-100, 1, "c")}
    assert lexicographical_topological_sort(graph, by_power.__getitem__) == ["b", "a", "c"]


def test_lexicographical_topological_sort_drops_cycles_and_outside_edges() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"outside"}, "d": {"c", "a"}}
    assert lexicographical_topological_sort(graph, lambda n: (0, 0, n)) == ["c"]


def v12_room(factory: EventFactory) -> None:
    """Create, Alice's join: the start of the MSC4297 scenarios (v12 auth events)."""
    factory.make(state("CREATE", ALICE, CREATE_TYPE, "", {}))
    factory.make(member("MA", ALICE, ALICE, JOIN), prev=["CREATE"])


def test_v21_replays_the_conflicted_state_subgraph() -> None:
    # Synapse test_v21 test_state_reset_replay_conflicted_subgraph (MSC4297
    # problem B): Evelyn's rename cites old power levels; the dodgy state set
    # holds those.  Bob's and Charlie's promotions lie *between* conflicted
    # events, are replayed, and the newest power levels survive.
    factory = EventFactory(RoomVersions.V12)
    make = factory.make
    v12_room(factory)
    make(power_levels("P1", ALICE, {}), auth=["MA"])
    make(state("JR", ALICE, JOIN_RULES, "", {"join_rule": "public"}), auth=["MA", "P1"])
    make(member("MB", BOB, BOB, JOIN), auth=["P1", "JR"])
    make(member("MC", CHARLIE, CHARLIE, JOIN), auth=["P1", "JR"])
    make(power_levels("P2", ALICE, {BOB: 50}), auth=["MA", "P1"])
    make(power_levels("P3", BOB, {BOB: 50, CHARLIE: 50}), auth=["MB", "P2"])
    make(member("ME1", EVELYN, EVELYN, JOIN), auth=["P3", "JR"])
    make(member("ME2", EVELYN, EVELYN, JOIN), auth=["P1", "JR", "ME1"])
    make(member("MZ", ZARA, ZARA, JOIN), auth=["P3", "JR"])
    common = ("CREATE", "MA", "MB", "MC", "JR")
    dodgy = (*common, "ME2", "P1")
    sensible = (*common, "MZ", "P3")
    # ME2 is replayed first (P1 epoch of the mainline), then ME1 (P3 epoch).
    expected = factory.named(factory.state_map(*common, "ME1", "MZ", "P3"))
    assert resolve_in(factory, [dodgy, sensible]) == expected


@pytest.mark.parametrize(
    ("room_version", "join_rules"),
    [(RoomVersions.V11, None), (RoomVersions.V12, "JR2")],
    ids=["v11-resets", "v12"],
)
def test_v21_starts_from_an_empty_state(room_version: RoomVersion, join_rules: str | None) -> None:
    # Synapse test_v21 test_state_reset_start_empty_set (MSC4297 problem A):
    # a server hands us an old join rules event.  Alice, who sent both join
    # rules, has left since.  v2 replays them on the unconflicted state, where
    # she is gone, and the room loses its join rules; v2.1 replays them on
    # their own auth events and keeps the newer one.
    factory = EventFactory(room_version)
    make = factory.make
    create = ["CREATE"] if room_version.create_event_in_auth_events else []
    make(state("CREATE", ALICE, CREATE_TYPE, "", {}))
    make(member("MA1", ALICE, ALICE, JOIN), auth=create, prev=["CREATE"])
    make(power_levels("P", ALICE, {ALICE: 100, BOB: 100}), auth=[*create, "MA1"])
    make(state("JR1", ALICE, JOIN_RULES, "", {"join_rule": "public"}), auth=[*create, "MA1", "P"])
    make(member("MB", BOB, BOB, JOIN), auth=[*create, "P", "JR1"])
    make(state("JR2", ALICE, JOIN_RULES, "", {"join_rule": "invite"}), auth=[*create, "MA1", "P"])
    make(member("MA2", ALICE, ALICE, LEAVE), auth=[*create, "P", "MA1"])
    common = ("CREATE", "MA2", "MB", "P")
    resolved = resolve_in(factory, [(*common, "JR2"), (*common, "JR1")])
    extra = (join_rules,) if join_rules else ()
    assert resolved == factory.named(factory.state_map(*common, *extra))


def test_v12_rejected_auth_events_are_not_used() -> None:
    # The v12 scenario above, with Alice's join marked rejected: neither join
    # rules event can be authorised by its auth events any more.
    factory = EventFactory(RoomVersions.V12)
    make = factory.make
    make(state("CREATE", ALICE, CREATE_TYPE, "", {}))
    make(member("MA1", ALICE, ALICE, JOIN), prev=["CREATE"])
    make(power_levels("P", ALICE, {BOB: 100}), auth=["MA1"])
    make(state("JR1", ALICE, JOIN_RULES, "", {"join_rule": "public"}), auth=["MA1", "P"])
    make(state("JR2", ALICE, JOIN_RULES, "", {"join_rule": "invite"}), auth=["MA1", "P"])
    make(member("MA2", ALICE, ALICE, LEAVE), auth=["P", "MA1"])
    common = ("CREATE", "MA2", "P")
    state_sets = [factory.state_map(*common, "JR2"), factory.state_map(*common, "JR1")]
    rejected = {factory.id("MA1")}
    resolved = resolve_state_groups(
        factory.version, state_sets, factory.events, rejected_event_ids=rejected
    )
    assert factory.named(resolved) == factory.named(factory.state_map(*common))
