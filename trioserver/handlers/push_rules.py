"""Push rules: CRUD for the client API and compiled rules for the send path.

Theory of operation
-------------------
Each user's `PushRuleSet` (their rules merged with the server defaults) and its
`CompiledPushRules` are cached together in memory, bounded, least recently used first out.
The send path (`rules_for_users`) reads the database only for the users it misses, all in one
transaction. Every change goes to the database first and then drops the user's entry; a read
that started before a change may not put its (older) result back, which a per-user generation
count ensures. After every change the listeners are told (`add_change_listener`): the account
data handler advances its stream so that ``m.push_rules`` reaches the user's ``/sync``.

Most users never change a rule. The users who have (anything stored) are read once, on first
use, and kept with everyone changed since; for anyone else a miss builds the defaults without
reading the database, so a room's first message after start-up, or a new member's first
evaluation, costs no query per user.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import attrs

from trioserver.errors import MatrixError
from trioserver.push.evaluator import CompiledPushRules, compile_push_rules
from trioserver.push.rules import (
    CONTENT,
    DEFAULT_RULE_IDS,
    KINDS,
    OVERRIDE,
    ROOM,
    SENDER,
    UNDERRIDE,
    PushRule,
    PushRuleSet,
    build_rule_set,
)
from trioserver.push.validation import (
    actions_from_request,
    check_rule_id,
    enabled_from_request,
    rule_from_request,
)
from trioserver.stores.push_rules import AddResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from trioserver.stores.push_rules import PushRuleStore

JsonDict = dict[str, Any]
MAX_CACHED_USERS: Final = 10_000
# How many rules of each kind a user may have. Every rule is evaluated on the events writer for
# each message the user receives; a content pattern (or a condition on the body) costs a scan
# of the body (about 30 us for a 60 kB body), so without a bound one user's rules could stall
# everyone's sends. Generous against real use: Element makes one content rule per keyword and
# one override or room rule per muted or mentions-only room.
MAX_OWN_RULES: Final = {CONTENT: 100, OVERRIDE: 300, UNDERRIDE: 300, ROOM: 1000, SENDER: 1000}


@attrs.frozen
class _Cached:
    rules: PushRuleSet
    compiled: CompiledPushRules
    # Nothing stored: exactly the server-default rules.
    on_defaults: bool


def _not_found() -> MatrixError:
    return MatrixError("M_NOT_FOUND", "Unknown push rule", status=404)


def check_kind(kind: str) -> None:
    """Raises MatrixError (400 ``M_UNRECOGNIZED``) for a kind that is not a push rule kind."""
    if kind not in KINDS:
        raise MatrixError("M_UNRECOGNIZED", f"Unknown push rule kind: {kind}"[:200], status=400)


class PushRulesHandler:
    """Each user's push rules (see the module docstring)."""

    def __init__(self, store: PushRuleStore, *, max_cached: int = MAX_CACHED_USERS) -> None:
        self._store = store
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._generation: dict[str, int] = {}
        self._max_cached = max_cached
        self._listeners: list[Callable[[str], Awaitable[None]]] = []
        self._invalidation_listeners: list[Callable[[Iterable[str] | None], None]] = []
        # Users with stored rules (read on first use), and everyone changed since start-up.
        self._stored_users: set[str] | None = None
        self._changed_users: set[str] = set()

    def add_change_listener(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Have ``await listener(user_id)`` called after each change to a user's rules."""
        self._listeners.append(listener)

    def add_invalidation_listener(self, listener: Callable[[Iterable[str] | None], None]) -> None:
        """Have ``listener(user_ids)`` called whenever cached rules are dropped (after a change
        here, or one the caches stream announced; None: everyone's). Sync; must not raise."""
        self._invalidation_listeners.append(listener)

    # -- Reading ---------------------------------------------------------------------------

    async def _load(self, user_ids: Iterable[str]) -> dict[str, _Cached]:
        found: dict[str, _Cached] = {}
        missing: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            entry = self._cache.get(user_id)
            if entry is None:
                missing.append(user_id)
            else:
                self._cache.move_to_end(user_id)
                found[user_id] = entry
        if not missing:
            return found
        generations = {u: self._generation.get(u, 0) for u in missing}
        if self._stored_users is None:
            self._stored_users = await self._store.users_with_rules()
        to_read = [u for u in missing if u in self._stored_users or u in self._changed_users]
        stored = await self._store.rules_for_users(to_read) if to_read else {}
        for user_id in missing:
            row = stored.get(user_id)
            if row is None or (not row.rules and not row.changes):
                rules, on_defaults = build_rule_set(user_id, (), {}), True
            else:
                rules, on_defaults = build_rule_set(user_id, row.rules, row.changes), False
            entry = _Cached(rules, compile_push_rules(rules), on_defaults)
            found[user_id] = entry
            if self._generation.get(user_id, 0) == generations[user_id]:
                self._remember(user_id, entry)
        return found

    def _remember(self, user_id: str, entry: _Cached) -> None:
        self._cache[user_id] = entry
        self._cache.move_to_end(user_id)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    async def rules_for_users(self, user_ids: Iterable[str]) -> dict[str, CompiledPushRules]:
        """Each user's compiled rules, from memory except for users not cached yet.

        Checkpoint: only when some user is not cached (one database read for all of them).
        """
        return {u: entry.compiled for u, entry in (await self._load(user_ids)).items()}

    async def rule_set(self, user_id: str) -> PushRuleSet:
        """The user's rules in evaluation order. Checkpoint: on a cache miss."""
        return (await self._load([user_id]))[user_id].rules

    async def users_on_defaults(self, user_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each user has nothing of their own: exactly the server-default rules.

        Users known to have nothing stored are answered without building their rules.

        Checkpoint: yes, when some user is neither cached nor known to have nothing stored.
        """
        if self._stored_users is None:
            self._stored_users = await self._store.users_with_rules()
        answers: dict[str, bool] = {}
        to_load = []
        for user_id in user_ids:
            entry = self._cache.get(user_id)
            if entry is not None:
                answers[user_id] = entry.on_defaults
            elif user_id in self._stored_users or user_id in self._changed_users:
                to_load.append(user_id)
            else:
                answers[user_id] = True
        if to_load:
            for user_id, loaded in (await self._load(to_load)).items():
                answers[user_id] = loaded.on_defaults
        return answers

    async def rules_json(self, user_id: str) -> JsonDict:
        """``GET /pushrules/``, also the content of ``m.push_rules``. Checkpoint: on a miss."""
        return (await self.rule_set(user_id)).to_json()

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> PushRule:
        """One rule. Raises MatrixError: 400 unknown kind, 404 unknown rule."""
        check_kind(kind)
        rule = (await self.rule_set(user_id)).find(kind, rule_id)
        if rule is None:
            raise _not_found()
        return rule

    # -- Changing --------------------------------------------------------------------------

    def invalidate_nowait(self, user_ids: Iterable[str] | None) -> None:
        """Forget cached rules of `user_ids` (None: everyone's) because another instance
        changed them (the caches stream's ``push_rules`` rows, issue 13)."""
        users = None if user_ids is None else list(user_ids)
        for user_id in self._cache.copy() if users is None else users:
            self._changed_users.add(user_id)
            self._generation[user_id] = self._generation.get(user_id, 0) + 1
            self._cache.pop(user_id, None)
        if users is None:
            # Users never cached here may have rules now too: read the stored set again.
            self._stored_users = None
        for listener in self._invalidation_listeners:
            listener(users)

    async def _changed(self, user_id: str) -> None:
        self.invalidate_nowait([user_id])
        for listener in self._listeners:
            await listener(user_id)

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: object,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        """``PUT /pushrules/global/{kind}/{ruleId}``: add or replace one of the user's rules.

        Raises:
            MatrixError: 400 for an unknown kind, a bad id or body, an id starting with ``.``
                (reserved for server-default rules), a `before`/`after` that names none of
                the user's rules of that kind, or a new rule past `MAX_OWN_RULES`.
        """
        check_kind(kind)
        check_rule_id(rule_id)
        if rule_id.startswith("."):
            raise MatrixError(
                "M_INVALID_PARAM", "cannot add new rule_ids that start with '.'", status=400
            )
        rule = rule_from_request(kind, rule_id, body)
        rules = await self.rule_set(user_id)
        if rules.find(kind, rule_id) is None:
            own = sum(1 for r in rules.rules if r.kind == kind and not r.default)
            if own >= MAX_OWN_RULES[kind]:
                raise MatrixError(
                    "M_INVALID_PARAM",
                    f"At most {MAX_OWN_RULES[kind]} {kind} rules are allowed; delete one first",
                    status=400,
                )
        result = await self._store.add_rule(user_id, rule, before=before, after=after)
        if result is AddResult.RELATIVE_NOT_FOUND:
            raise MatrixError(
                "M_UNKNOWN", f"before/after rule not found: {before or after}"[:300], status=400
            )
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        """``DELETE /pushrules/global/{kind}/{ruleId}``.

        Raises:
            MatrixError: 400 unknown kind or a server-default rule, 404 unknown rule.
        """
        check_kind(kind)
        if (kind, rule_id) in DEFAULT_RULE_IDS:
            raise MatrixError(
                "M_INVALID_PARAM", "Server-default rules cannot be deleted", status=400
            )
        if not await self._store.delete_rule(user_id, kind, rule_id):
            raise _not_found()
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, body: object) -> None:
        """``PUT .../{ruleId}/enabled``.

        Raises:
            MatrixError: 400 unknown kind or not a boolean, 404 unknown rule.
        """
        check_kind(kind)
        enabled = enabled_from_request(body)
        if (kind, rule_id) in DEFAULT_RULE_IDS:
            await self._store.set_default_enabled(user_id, kind, rule_id, enabled)
        elif not await self._store.set_rule_enabled(user_id, kind, rule_id, enabled):
            raise _not_found()
        await self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, body: object) -> None:
        """``PUT .../{ruleId}/actions``.

        Raises:
            MatrixError: 400 unknown kind or bad actions, 404 unknown rule.
        """
        check_kind(kind)
        actions = actions_from_request(body)
        if (kind, rule_id) in DEFAULT_RULE_IDS:
            await self._store.set_default_actions(user_id, kind, rule_id, actions)
        elif not await self._store.set_rule_actions(user_id, kind, rule_id, actions):
            raise _not_found()
        await self._changed(user_id)

    async def copy_room_rules(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        """Give the new room of a room upgrade the user's rules about the old one (Synapse:
        every enabled rule with an ``event_match`` on ``room_id`` naming the old room, copied
        under the new room's id with the condition rewritten).

        Copying again (the user joins the new room after the upgrade copied for them) changes
        nothing: rules already there are kept, and no change is announced.

        Checkpoint: yes.
        """
        rules = await self.rule_set(user_id)
        copies = [
            _copy_for_room(rule, old_room_id, new_room_id)
            for rule in rules.rules
            if not rule.default and rule.enabled and _names_room(rule, old_room_id)
        ]
        copies = [c for c in copies if rules.find(c.kind, c.rule_id) is None]
        if copies:
            await self._store.add_rules(user_id, copies[::-1])
            await self._changed(user_id)


def _names_room(rule: PushRule, room_id: str) -> bool:
    return any(
        c.get("key") == "room_id" and c.get("pattern") == room_id
        for c in rule.effective_conditions()
    )


def _copy_for_room(rule: PushRule, old_room_id: str, new_room_id: str) -> PushRule:
    if rule.kind == ROOM:
        return attrs.evolve(rule, rule_id=new_room_id)
    conditions = tuple(
        {**c, "pattern": new_room_id}
        if c.get("key") == "room_id" and c.get("pattern") == old_room_id
        else c
        for c in rule.conditions
    )
    return attrs.evolve(rule, rule_id=new_room_id, conditions=conditions)
