"""Test helpers for state resolution: named events and small room DAGs.

:class:`EventFactory` makes real :class:`Event` objects (through
``Event.from_pdu``, so they pass PDU validation) of any room version, with
readable names: in v1/v2 the name is the event ID (``$NAME:example.com``); in
v3+ the ID is the reference hash and the factory maps names to IDs.  Hashes
and signatures are placeholders: state resolution never checks them.

:class:`Dag` is the harness of the well-known state resolution test cases
(Synapse ``tests/state/test_v2.py``, Ruma ``state-res`` tests): a room whose
initial events are followed by a test's events, linked by ``prev_events``
chains.  Events are processed in topological order (ties by name) and get
increasing timestamps; each one's ``auth_events`` are chosen from the state
before it with the "auth events selection" algorithm, and the state before
an event with several ``prev_events`` is their resolution.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from trioserver.events import (
    Event,
    RoomVersion,
    StateKey,
    auth_types_for_event,
    get_creators,
    resolve_state_groups,
)
from trioserver.events.state_res_v2 import lexicographical_topological_sort

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"
ELLA = "@ella:example.com"

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
TOPIC = "m.room.topic"
MESSAGE = "m.room.message"

JOIN = {"membership": "join"}
BAN = {"membership": "ban"}
LEAVE = {"membership": "leave"}
INVITE = {"membership": "invite"}

ROOM_ID = "!room:example.com"


class Node(NamedTuple):
    """An event of a test case, before it is placed in the DAG."""

    name: str
    sender: str
    type: str
    state_key: str | None
    content: Mapping[str, Any]
    depth: int | None = None  # default: one more than the deepest prev event


def state(name: str, sender: str, type: str, state_key: str, content: Mapping[str, Any]) -> Node:
    """A state event node."""
    return Node(name, sender, type, state_key, content)


def member(name: str, sender: str, target: str, content: Mapping[str, Any]) -> Node:
    """An ``m.room.member`` node."""
    return Node(name, sender, MEMBER, target, content)


def message(name: str, sender: str) -> Node:
    """A message (non-state) node."""
    return Node(name, sender, MESSAGE, None, {})


#: Every DAG starts with these (Synapse ``INITIAL_EVENTS``): a public room
#: created by Alice, where Bob, Charlie and Zara have joined.
INITIAL_NODES = (
    state("CREATE", ALICE, CREATE, "", {}),
    member("IMA", ALICE, ALICE, JOIN),
    state("IPOWER", ALICE, POWER_LEVELS, "", {"users": {ALICE: 100}}),
    state("IJR", ALICE, JOIN_RULES, "", {"join_rule": "public"}),
    member("IMB", BOB, BOB, JOIN),
    member("IMC", CHARLIE, CHARLIE, JOIN),
    member("IMZ", ZARA, ZARA, JOIN),
    message("START", ZARA),
    message("END", ZARA),
)
INITIAL_EDGES = ("START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE")


class EventFactory:
    """Builds named events of one room version (see the module docstring)."""

    def __init__(self, room_version: RoomVersion) -> None:
        self.version = room_version
        self.events: dict[str, Event] = {}
        self.ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.room_id: str | None = None if room_version.room_id_from_create_event else ROOM_ID
        self._clock = 0
        self._creators: frozenset[str] = frozenset()

    def make(
        self,
        node: Node,
        *,
        auth: Sequence[str] = (),
        prev: Sequence[str] = (),
        depth: int = 1,
        ts: int | None = None,
    ) -> Event:
        """Build ``node`` with the given auth and prev events (names or event IDs)."""
        self._clock += 1
        pdu: dict[str, Any] = {
            "type": node.type,
            "sender": node.sender,
            "content": self._content(node),
            "depth": depth,
            "origin_server_ts": self._clock if ts is None else ts,
            "prev_events": self._refs(prev),
            "auth_events": self._refs(auth),
            "hashes": {"sha256": "placeholder"},
            "signatures": {},
        }
        if node.state_key is not None:
            pdu["state_key"] = node.state_key
        if self.room_id is not None:
            pdu["room_id"] = self.room_id
        if self.version.event_id_in_pdu:
            pdu["event_id"] = f"${node.name}:example.com"
        event = Event.from_pdu(self.version, pdu)
        if event.is_create_event():
            self.room_id = event.room_id
            self._creators = get_creators(self.version, event)
        self.events[event.event_id] = event
        self.ids[node.name] = event.event_id
        self.names[event.event_id] = node.name
        return event

    def id(self, name: str) -> str:
        """The event ID of the event called ``name``."""
        return self.ids[name]

    def state_map(self, *names: str) -> dict[StateKey, str]:
        """A state map holding the named events."""
        result: dict[StateKey, str] = {}
        for name in names:
            event = self.events[self.ids[name]]
            assert event.state_key is not None
            result[(event.type, event.state_key)] = event.event_id
        return result

    def named(self, state_map: Mapping[StateKey, str]) -> dict[StateKey, str]:
        """``state_map`` with event IDs replaced by names."""
        return {key: self.names.get(event_id, event_id) for key, event_id in state_map.items()}

    def _refs(self, names: Sequence[str]) -> list[Any]:
        ids = [self.ids.get(name, name) for name in names]
        if self.version.event_id_in_pdu:
            return [[event_id, {"sha256": "placeholder"}] for event_id in ids]
        return ids

    def _content(self, node: Node) -> dict[str, Any]:
        content = dict(node.content)
        if node.type == CREATE and node.state_key == "":
            content.setdefault("room_version", self.version.identifier)
            if not self.version.implicit_room_creator:
                content.setdefault("creator", node.sender)
        if node.type == POWER_LEVELS and self.version.privileged_creators:
            # v12: creators have infinite power and must not be listed in "users".
            users = content.get("users", {})
            if isinstance(users, Mapping):
                content["users"] = {u: v for u, v in users.items() if u not in self._creators}
        return content


class Dag:
    """A room DAG built from nodes and ``prev_events`` chains (see the module docstring)."""

    def __init__(
        self,
        room_version: RoomVersion,
        nodes: Sequence[Node],
        edges: Sequence[Sequence[str]],
        *,
        initial: bool = True,
    ) -> None:
        """Args:
        room_version: The room's version.
        nodes: The test's events.
        edges: Chains of names, e.g. ``["END", "B", "A"]``: END's prev event
            is B, B's is A.
        initial: Start from :data:`INITIAL_NODES` and :data:`INITIAL_EDGES`.
        """
        self.factory = EventFactory(room_version)
        self.state_at: dict[str, dict[StateKey, str]] = {}
        all_nodes = {node.name: node for node in (*INITIAL_NODES, *nodes)} if initial else {}
        all_nodes.update({node.name: node for node in nodes})
        prevs: dict[str, set[str]] = {name: set() for name in all_nodes}
        chains = [INITIAL_EDGES, *edges] if initial else list(edges)
        for chain in chains:
            for later, earlier in itertools.pairwise(chain):
                prevs[later].add(earlier)
        order = lexicographical_topological_sort(prevs, lambda name: (0, 0, name))
        depths: dict[str, int] = {}
        for name in order:
            self._add(all_nodes[name], sorted(prevs[name]), depths)

    def _add(self, node: Node, prev: list[str], depths: dict[str, int]) -> None:
        factory = self.factory
        if not prev:
            before: dict[StateKey, str] = {}
        elif len(prev) == 1:
            before = dict(self.state_at[prev[0]])
        else:
            before = self.resolve(*prev)
        keys = auth_types_for_event(
            factory.version,
            type=node.type,
            sender=node.sender,
            state_key=node.state_key,
            content=node.content,
        )
        auth = [before[key] for key in keys if key in before]
        depth = node.depth or max((depths[p] for p in prev), default=0) + 1
        depths[node.name] = depth
        event = factory.make(node, auth=auth, prev=prev, depth=depth)
        after = dict(before)
        if event.state_key is not None:
            after[(event.type, event.state_key)] = event.event_id
        self.state_at[node.name] = after

    def resolve(self, *names: str) -> dict[StateKey, str]:
        """Resolve the states after the named events."""
        state_sets = [self.state_at[name] for name in names]
        return resolve_state_groups(self.factory.version, state_sets, self.factory.events)

    def changed_at_end(self, expected_names: Sequence[str]) -> tuple[dict[StateKey, str], ...]:
        """(expected, actual): the state at END that differs from START, by name.

        ``expected`` maps the key of each named event to its name; ``actual``
        holds the keys of the state at END that are expected or changed since
        START (Synapse ``do_check``).
        """
        factory = self.factory
        expected: dict[StateKey, str] = {}
        for name in expected_names:
            event = factory.events[factory.id(name)]
            assert event.state_key is not None
            expected[(event.type, event.state_key)] = name
        start, end = self.state_at["START"], self.state_at["END"]
        actual = {
            key: factory.names[event_id]
            for key, event_id in end.items()
            if key in expected or start.get(key) != event_id
        }
        return expected, actual
