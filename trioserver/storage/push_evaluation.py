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
whose rules are exactly the defaults (checked once, and again after each change of their rules:
the push rules handler tells us) gets that result,
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

from trioserver.events.constants import POWER_LEVELS_KEY
from trioserver.events.power_levels import get_user_power_level, parse_power_level
from trioserver.events.relations import MAIN_THREAD, THREAD, relation_of, thread_id_of
from trioserver.push.evaluator import (
    PushContext,
    compile_push_rules,
    is_highlight,
    is_notify,
    prepare_event,
)
from trioserver.push.rules import build_rule_set
from trioserver.stores.push_actions import EventPush, PushGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from trioserver.events import Event
    from trioserver.push.evaluator import CompiledPushRules, PreparedEvent
    from trioserver.storage.live_room import LiveRoom
    from trioserver.stores.account_data import AccountDataStore
    from trioserver.stores.events import EventStore

MEMBER = "m.room.member"
# A user id no condition matches: the result for everyone the event does not name.
_NOBODY = "@\x00push-evaluation-nobody\x00:invalid"
_MAX_CACHED_ROOMS = 1_000
_MAX_CACHED_USERS = 100_000


class PushRulesSource(Protocol):
    """Where compiled push rules come from (`handlers.push_rules.PushRulesHandler`)."""

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, CompiledPushRules]:
        """Each user's compiled rules (cached)."""
        ...

    async def users_on_defaults(self, user_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each user's rules are exactly the server defaults (cached)."""
        ...

    def add_invalidation_listener(self, listener: Callable[[Iterable[str] | None], None]) -> None:
        """Have ``listener(user_ids)`` called whenever cached rules are dropped: after a
        change here, or one another instance announced (None: everyone's)."""
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
    user_ids: tuple[str, ...]
    display_names: Mapping[str, str | None]
    # (lower-cased string, user id): the user may be named by a body containing the string.
    needles: tuple[tuple[str, str], ...]
    member_count: int
    notification_levels: Mapping[str, int]


def _needles(user_id: str, display_name: str | None) -> tuple[str, ...]:
    # The localpart is in the user id: a body naming the user id contains it too.
    localpart = user_id[1:].split(":", 1)[0]
    found = {localpart.lower()}
    if display_name:
        found.add(display_name.lower())
    return tuple(sorted(found))


def _notification_levels(room: LiveRoom) -> Mapping[str, int]:
    event = room.state.get(POWER_LEVELS_KEY)
    raw = event.content.get("notifications") if event is not None else None
    levels = {"room": 50}
    if isinstance(raw, dict):
        for key, value in raw.items():
            # The values the room version's auth rules accept (strings before v10).
            level = parse_power_level(room.room_version, value)
            if level is not None:
                levels[key] = level
    return levels


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
        # user id -> whether their rules are exactly the defaults; dropped when they change.
        self._on_defaults: dict[str, bool] = {}
        # Goes up on every change of anyone's rules: a classification read across a change
        # is not kept.
        self._rules_generation = 0
        # Also when main changed them and this is an events writer elsewhere (issue 13).
        rules.add_invalidation_listener(self._rules_changed)
        # room id -> (room index, ignore lists generation, members ignoring anyone).
        self._ignorers: dict[str, tuple[_RoomIndex, int, dict[str, frozenset[str]]]] = {}

    async def evaluate(
        self, room: LiveRoom, event: Event, in_batch: Callable[[str], Event | None]
    ) -> EventPush | None:
        """The push actions of `event`, for the room's current state (`room`).

        Args:
            in_batch: finds an event built earlier in the same batch by id (a relation's
                parent may be among them), or None.

        Returns:
            The users it notifies or highlights, or None when there are none.

        Checkpoint: yes.
        """
        index = self._index(room)
        recipients = await self._recipients(room.room_id, index, event.sender)
        invitee = await self._local_invitee(event, index)
        if invitee is not None:
            recipients.append(invitee)
        if not recipients:
            return None
        ctx = PushContext(
            room_member_count=index.member_count,
            sender_power_level=get_user_power_level(room.room_version, event.sender, room.state),
            notification_levels=index.notification_levels,
        )
        groups = await self._actions(event, ctx, index, recipients)
        if not groups:
            return None
        return EventPush(await self._thread_id(event, in_batch), groups)

    def _rules_changed(self, user_ids: Iterable[str] | None) -> None:
        self._rules_generation += 1
        if user_ids is None:
            self._on_defaults.clear()
        for user_id in user_ids or ():
            self._on_defaults.pop(user_id, None)

    async def _recipients(self, room_id: str, index: _RoomIndex, sender: str) -> list[str]:
        # Spec "Ignoring Users": no notifications from an ignored user (nor for the sender).
        ignorers = await self._room_ignorers(room_id, index)
        return [
            user_id
            for user_id in index.user_ids
            if user_id != sender and (not ignorers or sender not in ignorers.get(user_id, ()))
        ]

    async def _local_invitee(self, event: Event, index: _RoomIndex) -> str | None:
        """The local user an invite is for, who is not a member yet: Synapse evaluates their
        rules too, so that `.m.rule.invite_for_me` notifies (and pushes) them."""
        user_id = event.state_key
        if (
            event.type != MEMBER
            or event.membership != "invite"
            or user_id is None
            or user_id == event.sender
            or not user_id.endswith(self._suffix)
            or user_id in index.display_names
        ):
            return None
        ignored = self._account_data.ignored_users_nowait(user_id)
        if ignored is None:
            ignored = await self._account_data.ignored_users(user_id)
        return None if event.sender in ignored else user_id

    async def _room_ignorers(self, room_id: str, index: _RoomIndex) -> dict[str, frozenset[str]]:
        """The members who ignore anyone, with whom (recomputed when the members or any
        ignore list change)."""
        generation = self._account_data.ignored_generation
        cached = self._ignorers.get(room_id)
        if cached is not None and cached[0] is index and cached[1] == generation:
            return cached[2]
        ignorers: dict[str, frozenset[str]] = {}
        for user_id in index.user_ids:
            ignored = self._account_data.ignored_users_nowait(user_id)
            if ignored is None:
                ignored = await self._account_data.ignored_users(user_id)
            if ignored:
                ignorers[user_id] = ignored
        if generation == self._account_data.ignored_generation:
            if len(self._ignorers) >= _MAX_CACHED_ROOMS:
                self._ignorers.clear()
            self._ignorers[room_id] = (index, generation, ignorers)
        return ignorers

    async def _actions(
        self, event: Event, ctx: PushContext, index: _RoomIndex, recipients: list[str]
    ) -> tuple[PushGroup, ...]:
        prepared = prepare_event(event.client_fields())
        concerned = _concerned(event, index)
        await self._classify(recipients)
        on_defaults = self._on_defaults
        by_defaults = [u for u in recipients if on_defaults.get(u) is True and u not in concerned]
        by_actions: dict[bytes, tuple[list[Any], list[str]]] = {}
        if by_defaults:
            actions = self._defaults.actions_for(prepared, ctx, user_id=_NOBODY, display_name=None)
            if actions:
                by_actions[orjson.dumps(actions)] = (actions, by_defaults)
        if len(by_defaults) < len(recipients):
            await self._own_actions(prepared, ctx, index, recipients, by_defaults, by_actions)
        groups = []
        for actions, users in by_actions.values():
            notify, highlight = is_notify(actions), is_highlight(actions)
            if notify or highlight:
                groups.append(PushGroup(tuple(users), actions, notify, highlight))
        return tuple(groups)

    async def _own_actions(
        self,
        prepared: PreparedEvent,
        ctx: PushContext,
        index: _RoomIndex,
        recipients: list[str],
        by_defaults: list[str],
        by_actions: dict[bytes, tuple[list[Any], list[str]]],
    ) -> None:
        """Evaluate each user's own rules for the recipients not served by the defaults."""
        served = set(by_defaults)
        others = [u for u in recipients if u not in served]
        rules = await self._rules.rules_for_users(others)
        for user_id in others:
            compiled = rules.get(user_id)
            if compiled is None:
                continue
            actions = compiled.actions_for(
                prepared, ctx, user_id=user_id, display_name=index.display_names.get(user_id)
            )
            if actions:
                by_actions.setdefault(orjson.dumps(actions), (actions, []))[1].append(user_id)

    async def _classify(self, recipients: list[str]) -> None:
        """Learn which recipients are on the default rules (once per user, and again after
        they change their rules): those need no evaluation of their own."""
        unknown = [u for u in recipients if u not in self._on_defaults]
        if not unknown:
            return
        generation = self._rules_generation
        answers = await self._rules.users_on_defaults(unknown)
        if generation != self._rules_generation:
            return  # a change raced the read: ask again next time
        if len(self._on_defaults) + len(answers) > _MAX_CACHED_USERS:
            self._on_defaults.clear()
        self._on_defaults.update(answers)

    async def _thread_id(self, event: Event, in_batch: Callable[[str], Event | None]) -> str:
        # Spec "Threading": an m.thread relation names the root; any other relation puts the
        # event in the thread of the event it relates to (Synapse looks one hop up).
        relation = relation_of(event)
        if relation is None:
            return MAIN_THREAD
        if relation.rel_type == THREAD:
            return relation.parent_id
        parent = in_batch(relation.parent_id)
        if parent is None:
            stored = await self._events.get_event(relation.parent_id)
            parent = stored.event if stored is not None else None
        if parent is None or parent.room_id != event.room_id:
            return MAIN_THREAD
        return thread_id_of(parent)

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
        index = _RoomIndex(
            room.state_group,
            tuple(m.user_id for m in local),
            {m.user_id: m.display_name for m in local},
            tuple((needle, m.user_id) for m in local for needle in m.needles),
            len(joined),
            _notification_levels(room),
        )
        self._rooms[room.room_id] = index
        self._rooms.move_to_end(room.room_id)
        if len(self._rooms) > _MAX_CACHED_ROOMS:
            self._rooms.popitem(last=False)
        return index


def _concerned(event: Event, index: _RoomIndex) -> set[str]:
    """Members a user-dependent condition could match for this event (a superset): those
    its state key or ``m.mentions`` names, and those whose display name, user id or
    localpart its body contains."""
    content = event.content
    found: set[str] = set()
    if event.state_key is not None:
        found.add(event.state_key)
    mentions = content.get("m.mentions")
    users = mentions.get("user_ids") if isinstance(mentions, dict) else None
    if isinstance(users, list):
        found.update(u for u in users if isinstance(u, str))
    body = content.get("body")
    if isinstance(body, str) and body:
        lowered = body.lower()
        found.update(user_id for needle, user_id in index.needles if needle in lowered)
    return found
