"""Evaluating local members' push rules for each event the writer stores (spec "Push Rules").

Theory of operation
-------------------
The events writer calls `PushEvaluator.evaluate` for each event it has built, before the batch
is stored; the result (`EventPush`) is written in the events' own transaction. Every input
comes from memory: the room's members, their display names, the power levels and the member
count from the writer's `LiveRoom` (indexed once per state group, not per event), the rules
from the push rules handler's cache, ignore lists from the account data cache. The only read
is of the parent of a non-thread relation (to place a reaction or edit in its thread), and that
is usually in the event cache.

Cost: a message to a room of N members must not cost N rule evaluations. The server default
rules are evaluated once per event, compiled for a user id no condition matches; every member
whose rules are exactly the defaults (checked once per change of their rules) gets that result,
unless the event could concern them by name: its state key, its ``m.mentions`` user ids, or a
body that contains their display name, user id or localpart. Those are all the ways in which a
user enters the default rules (``contains_display_name`` and the rules filled in with the
user's id or localpart), so the answer is the same as evaluating each of them. Members with
rules of their own, and those the event names, are evaluated with their own rules.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson

from trioserver.events.power_levels import get_user_power_level
from trioserver.push.evaluator import (
    PushContext,
    compile_push_rules,
    is_highlight,
    is_notify,
    prepare_event,
)
from trioserver.push.rules import build_rule_set
from trioserver.stores.push_actions import MAIN_THREAD, EventPush, PushGroup

if TYPE_CHECKING:
    from collections.abc import Iterable

    from trioserver.events import Event
    from trioserver.push.evaluator import CompiledPushRules, PreparedEvent
    from trioserver.push.rules import PushRuleSet
    from trioserver.storage.live_room import LiveRoom
    from trioserver.stores.account_data import AccountDataStore
    from trioserver.stores.events import EventStore

MEMBER = "m.room.member"
POWER_LEVELS_KEY = ("m.room.power_levels", "")
# A user id no condition matches: the result for everyone the event does not name.
_NOBODY = "@\x00push-evaluation-nobody\x00:invalid"
_MAX_CACHED_ROOMS = 1_000
_MAX_CACHED_USERS = 100_000


class PushRulesSource(Protocol):
    """Where compiled push rules come from (`handlers.push_rules.PushRulesHandler`)."""

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, CompiledPushRules]:
        """Each user's compiled rules (cached)."""
        ...

    async def rule_set(self, user_id: str) -> PushRuleSet:
        """The user's rules (cached)."""
        ...


@attrs.frozen
class _Member:
    user_id: str
    display_name: str | None
    # Lower-cased strings whose presence in a body may make a condition match this user.
    needles: tuple[str, ...]


@attrs.frozen
class _RoomIndex:
    """What push evaluation needs of a room's current state."""

    state_group: int | None
    local_members: tuple[_Member, ...]
    member_count: int
    notification_levels: Mapping[str, int]


def _needles(user_id: str, display_name: str | None) -> tuple[str, ...]:
    localpart = user_id[1:].split(":", 1)[0]
    found = {user_id.lower(), localpart.lower()}
    if display_name:
        found.add(display_name.lower())
    return tuple(sorted(found))


def _notification_levels(room: LiveRoom) -> Mapping[str, int]:
    event = room.state.get(POWER_LEVELS_KEY)
    raw = event.content.get("notifications") if event is not None else None
    levels = {"room": 50}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool):
                levels[key] = value
            elif isinstance(value, str) and value.lstrip("-").isdigit():
                levels[key] = int(value)
    return levels


def _relation(event: Event) -> tuple[str | None, str | None]:
    relates_to = event.content.get("m.relates_to")
    if not isinstance(relates_to, dict):
        return None, None
    rel_type, parent = relates_to.get("rel_type"), relates_to.get("event_id")
    return (
        rel_type if isinstance(rel_type, str) else None,
        parent if isinstance(parent, str) else None,
    )


class PushEvaluator:
    """Works out who each new event notifies; used by the events writer only."""

    def __init__(
        self,
        rules: PushRulesSource,
        events: EventStore,
        account_data: AccountDataStore,
        *,
        server_name: str,
    ) -> None:
        self._rules = rules
        self._events = events
        self._account_data = account_data
        self._suffix = ":" + server_name
        self._rooms: collections.OrderedDict[str, _RoomIndex] = collections.OrderedDict()
        self._defaults = compile_push_rules(build_rule_set(_NOBODY, (), {}))
        # user id -> (their compiled rules, whether those are exactly the defaults).
        self._on_defaults: dict[str, tuple[CompiledPushRules, bool]] = {}

    async def evaluate(
        self, room: LiveRoom, event: Event, batch: Mapping[str, Event]
    ) -> EventPush | None:
        """The push actions of `event`, for the room's current state (`room`).

        Args:
            batch: events built earlier in the same batch, by id (a relation's parent may be
                among them).

        Returns:
            The users it notifies or highlights, or None when there are none.

        Checkpoint: yes.
        """
        index = self._index(room)
        members = [m for m in index.local_members if m.user_id != event.sender]
        members = await self._not_ignoring(members, event.sender)
        if not members:
            return None
        rules = await self._rules.rules_for_users([m.user_id for m in members])
        await self._classify(rules)
        ctx = PushContext(
            room_member_count=index.member_count,
            sender_power_level=get_user_power_level(room.room_version, event.sender, room.state),
            notification_levels=index.notification_levels,
        )
        groups = self._actions(event, ctx, members, rules)
        if not groups:
            return None
        return EventPush(await self._thread_id(event, batch), groups)

    async def _classify(self, rules: Mapping[str, CompiledPushRules]) -> None:
        """Note which users' rules are exactly the defaults (once per change of them)."""
        for user_id, compiled in rules.items():
            known = self._on_defaults.get(user_id)
            if known is not None and known[0] is compiled:
                continue
            rule_set = await self._rules.rule_set(user_id)
            if len(self._on_defaults) >= _MAX_CACHED_USERS:
                self._on_defaults.clear()
            self._on_defaults[user_id] = (compiled, rule_set == build_rule_set(user_id, (), {}))

    def _actions(
        self,
        event: Event,
        ctx: PushContext,
        members: list[_Member],
        rules: Mapping[str, CompiledPushRules],
    ) -> tuple[PushGroup, ...]:
        prepared = prepare_event(event.client_fields())
        concerned = _Concerned.of(event)
        defaults: list[Any] | None = None
        by_actions: dict[bytes, list[str]] = {}
        actions_of: dict[bytes, list[Any]] = {}
        for member in members:
            compiled = rules.get(member.user_id)
            if compiled is None:
                continue
            known = self._on_defaults.get(member.user_id)
            if known is not None and known[0] is compiled and known[1]:
                if not concerned.names(member):
                    if defaults is None:
                        defaults = self._defaults.actions_for(
                            prepared, ctx, user_id=_NOBODY, display_name=None
                        )
                    actions = defaults
                else:
                    actions = _own(compiled, prepared, ctx, member)
            else:
                actions = _own(compiled, prepared, ctx, member)
            if not actions:
                continue
            key = orjson.dumps(actions)
            by_actions.setdefault(key, []).append(member.user_id)
            actions_of.setdefault(key, actions)
        groups = []
        for key, users in by_actions.items():
            actions = actions_of[key]
            notify, highlight = is_notify(actions), is_highlight(actions)
            if notify or highlight:
                groups.append(PushGroup(tuple(users), actions, notify, highlight))
        return tuple(groups)

    async def _not_ignoring(self, members: list[_Member], sender: str) -> list[_Member]:
        # Spec "Ignoring Users": no notifications from an ignored user.
        kept = []
        for member in members:
            ignored = self._account_data.ignored_users_nowait(member.user_id)
            if ignored is None:
                ignored = await self._account_data.ignored_users(member.user_id)
            if sender not in ignored:
                kept.append(member)
        return kept

    async def _thread_id(self, event: Event, batch: Mapping[str, Event]) -> str:
        # Spec "Threading": an m.thread relation names the root; any other relation puts the
        # event in the thread of the event it relates to (Synapse looks one hop up).
        rel_type, parent_id = _relation(event)
        if parent_id is None:
            return MAIN_THREAD
        if rel_type == "m.thread":
            return parent_id
        parent = batch.get(parent_id)
        if parent is None:
            stored = await self._events.get_event(parent_id)
            parent = stored.event if stored is not None else None
        if parent is None or parent.room_id != event.room_id:
            return MAIN_THREAD
        parent_rel, root = _relation(parent)
        return root if parent_rel == "m.thread" and root is not None else MAIN_THREAD

    def _index(self, room: LiveRoom) -> _RoomIndex:
        index = self._rooms.get(room.room_id)
        if index is not None and index.state_group == room.state_group:
            self._rooms.move_to_end(room.room_id)
            return index
        joined = [
            event
            for (event_type, _), event in room.state.items()
            if event_type == MEMBER and event.membership == "join"
        ]
        local = []
        for event in joined:
            user_id = event.state_key
            if user_id is None or not user_id.endswith(self._suffix):
                continue
            name = event.content.get("displayname")
            name = name if isinstance(name, str) and name else None
            local.append(_Member(user_id, name, _needles(user_id, name)))
        index = _RoomIndex(room.state_group, tuple(local), len(joined), _notification_levels(room))
        self._rooms[room.room_id] = index
        self._rooms.move_to_end(room.room_id)
        if len(self._rooms) > _MAX_CACHED_ROOMS:
            self._rooms.popitem(last=False)
        return index


def _own(
    compiled: CompiledPushRules, prepared: PreparedEvent, ctx: PushContext, member: _Member
) -> list[Any]:
    return compiled.actions_for(
        prepared, ctx, user_id=member.user_id, display_name=member.display_name
    )


@attrs.frozen
class _Concerned:
    """What of an event could name a particular user in a push condition."""

    state_key: str | None
    mentioned: frozenset[str]
    body: str

    @classmethod
    def of(cls, event: Event) -> _Concerned:
        content = event.content
        mentions = content.get("m.mentions")
        users = mentions.get("user_ids") if isinstance(mentions, dict) else None
        mentioned = (
            frozenset(u for u in users if isinstance(u, str))
            if isinstance(users, list)
            else frozenset()
        )
        body = content.get("body")
        return cls(event.state_key, mentioned, body.lower() if isinstance(body, str) else "")

    def names(self, member: _Member) -> bool:
        """Whether a user-dependent condition could match `member` (a superset test)."""
        if member.user_id == self.state_key or member.user_id in self.mentioned:
            return True
        return bool(self.body) and any(needle in self.body for needle in member.needles)
