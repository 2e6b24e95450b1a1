"""Properties of state resolution on seeded random DAGs.

Each DAG grows from the initial room with random power levels (some of them
malformed), memberships, join rules, topics and messages, each citing one or
two random earlier events as ``prev_events``; every merge along the way is a
resolution.  For the final merge: no exception, the same result whatever the
order of the state sets, and the unconflicted state map kept.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from trioserver.events import RoomVersion, RoomVersions, resolve_state_groups
from trioserver.events.state_res_common import separate

from tests.unit.state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN_RULES,
    POWER_LEVELS,
    TOPIC,
    ZARA,
    Dag,
    Node,
    member,
    message,
    state,
)

USERS = (ALICE, BOB, CHARLIE, EVELYN, ZARA)


def random_node(rng: random.Random, name: str) -> Node:
    sender = rng.choice(USERS)
    kind = rng.randrange(6)
    if kind == 0:
        users: Any = {u: rng.choice((0, 50, 100)) for u in rng.sample(USERS, 3)}
        if rng.random() < 0.1:
            users = ["malformed"]
        content = {"users": users, "ban": rng.choice((50, 75)), "kick": rng.choice((0, 50))}
        return state(name, sender, POWER_LEVELS, "", content)
    if kind in (1, 2):
        membership = rng.choice(("join", "join", "leave", "ban", "invite", "knock", 7))
        return member(name, sender, rng.choice(USERS), {"membership": membership})
    if kind == 3:
        rule = rng.choice(("public", "invite", "knock", None))
        return state(name, sender, JOIN_RULES, "", {"join_rule": rule})
    if kind == 4:
        return state(name, sender, TOPIC, "", {"topic": name})
    return message(name, sender)


def random_dag(room_version: RoomVersion, seed: int, size: int = 24) -> tuple[Dag, list[str]]:
    """A random DAG; returns it and the names of END's prev events."""
    rng = random.Random(seed)
    names = [f"E{i:02}" for i in range(size)]
    nodes = [random_node(rng, name) for name in names]
    edges: list[list[str]] = []
    earlier = ["START"]
    for name in names:
        for prev in rng.sample(earlier, min(len(earlier), rng.choice((1, 1, 2)))):
            edges.append([name, prev])
        earlier.append(name)
    tips = rng.sample(names, 3)
    edges.extend(["END", tip] for tip in tips)
    return Dag(room_version, nodes, edges), tips


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "room_version",
    [RoomVersions.V1, RoomVersions.V2, RoomVersions.V10, RoomVersions.V12],
    ids=lambda version: f"v{version.identifier}",
)
def test_random_dags(room_version: RoomVersion, seed: int) -> None:
    dag, tips = random_dag(room_version, seed)
    state_sets = [dag.state_at[tip] for tip in tips]
    events = dag.factory.events
    results = [
        resolve_state_groups(room_version, list(order), events)
        for order in itertools.permutations(state_sets)
    ]
    assert all(result == results[0] for result in results)
    unconflicted, _ = separate(state_sets)
    assert unconflicted.items() <= results[0].items()
