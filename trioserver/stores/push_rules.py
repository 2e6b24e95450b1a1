"""Push rules: each user's own rules and their changes to the server-default ones.

A user's rules of one kind are ordered by ``priority``, highest first. A new rule takes the
highest priority of its kind (SyTest "New rules appear before old rules by default"); ``before``
and ``after`` place it next to another of the user's rules, shifting the others by one in the
same transaction. The server-default rules are code (`trioserver.push.rules`); only a user's
change to one (``enabled``, ``actions``) is stored, in ``push_rule_defaults``.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from trioserver.push.rules import DefaultRuleChange, PushRule

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.stores.database import Database, Txn

_CHUNK = 500


@attrs.frozen
class StoredPushRules:
    """What the database holds about one user's rules.

    Attributes:
        rules: the user's own rules, each kind's highest priority first.
        changes: (kind, rule id) -> the user's change to that server-default rule.
    """

    rules: tuple[PushRule, ...] = ()
    changes: dict[tuple[str, str], DefaultRuleChange] = attrs.field(factory=dict)


class AddResult(Enum):
    """How `PushRuleStore.add_rule` went."""

    ADDED = "added"
    # ``before``/``after`` names no rule of the user's of that kind.
    RELATIVE_NOT_FOUND = "relative_not_found"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rules_for_users_txn(txn: Txn, user_ids: Sequence[str]) -> dict[str, StoredPushRules]:
    rules: dict[str, list[PushRule]] = {}
    changes: dict[str, dict[tuple[str, str], DefaultRuleChange]] = {}
    for start in range(0, len(user_ids), _CHUNK):
        chunk = user_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for user_id, kind, rule_id, conditions, pattern, actions, enabled in txn.execute(
            "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled"
            f" FROM push_rules WHERE user_id IN ({marks})"
            " ORDER BY user_id, kind, priority DESC",
            chunk,
        ).fetchall():
            rule = PushRule(
                kind,
                rule_id,
                tuple(orjson.loads(actions)),
                tuple(orjson.loads(conditions)),
                pattern=pattern,
                enabled=bool(enabled),
            )
            rules.setdefault(user_id, []).append(rule)
        for user_id, kind, rule_id, enabled, actions in txn.execute(
            "SELECT user_id, kind, rule_id, enabled, actions"
            f" FROM push_rule_defaults WHERE user_id IN ({marks})",
            chunk,
        ).fetchall():
            changes.setdefault(user_id, {})[(kind, rule_id)] = DefaultRuleChange(
                enabled=None if enabled is None else bool(enabled),
                actions=None if actions is None else tuple(orjson.loads(actions)),
            )
    return {
        user_id: StoredPushRules(tuple(rules.get(user_id, ())), changes.get(user_id, {}))
        for user_id in user_ids
    }


def _priority_txn(txn: Txn, user_id: str, kind: str, rule_id: str) -> int | None:
    row = txn.execute(
        "SELECT priority FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, kind, rule_id),
    ).fetchone()
    return None if row is None else int(row[0])


def _new_priority_txn(
    txn: Txn, user_id: str, kind: str, before: str | None, after: str | None
) -> int | None:
    """The priority for a new rule, making room for it; None when `before`/`after` is
    unknown."""
    relative_id = before if before is not None else after
    if relative_id is None:
        row = txn.execute(
            "SELECT COALESCE(MAX(priority), 0) FROM push_rules WHERE user_id = ? AND kind = ?",
            (user_id, kind),
        ).fetchone()
        return (0 if row is None else int(row[0])) + 1
    relative = _priority_txn(txn, user_id, kind, relative_id)
    if relative is None:
        return None
    # Before X: everything above X moves up one and the rule takes X's priority + 1. After X:
    # X and everything above it move up one and the rule takes X's old priority.
    floor = relative + 1 if before is not None else relative
    txn.execute(
        "UPDATE push_rules SET priority = priority + 1"
        " WHERE user_id = ? AND kind = ? AND priority >= ?",
        (user_id, kind, floor),
    )
    return floor


def _add_rule_txn(
    txn: Txn, user_id: str, rule: PushRule, before: str | None, after: str | None
) -> AddResult:
    # A rule PUT again keeps whether it is enabled (Synapse) but moves as a new one would.
    old_enabled = txn.execute(
        "SELECT enabled FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, rule.kind, rule.rule_id),
    ).fetchone()
    txn.execute(
        "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, rule.kind, rule.rule_id),
    )
    priority = _new_priority_txn(txn, user_id, rule.kind, before, after)
    if priority is None:
        return AddResult.RELATIVE_NOT_FOUND
    txn.execute(
        "INSERT INTO push_rules"
        " (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user_id,
            rule.kind,
            rule.rule_id,
            priority,
            _dumps(list(rule.conditions)),
            rule.pattern,
            _dumps(list(rule.actions)),
            1 if old_enabled is None else int(old_enabled[0]),
        ),
    )
    return AddResult.ADDED


class _Rollback(Exception):
    """Raised inside a transaction to undo it (a `before`/`after` that names no rule)."""


def _add_rule_or_rollback_txn(
    txn: Txn, user_id: str, rule: PushRule, before: str | None, after: str | None
) -> AddResult:
    result = _add_rule_txn(txn, user_id, rule, before, after)
    if result is not AddResult.ADDED:
        raise _Rollback
    return result


def _delete_rule_txn(txn: Txn, user_id: str, kind: str, rule_id: str) -> bool:
    txn.execute(
        "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (user_id, kind, rule_id),
    )
    return txn.rowcount > 0


def _set_user_rule_txn(
    txn: Txn, user_id: str, kind: str, rule_id: str, column: str, value: int | str
) -> bool:
    assert column in ("enabled", "actions")
    txn.execute(
        f"UPDATE push_rules SET {column} = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
        (value, user_id, kind, rule_id),
    )
    return txn.rowcount > 0


def _set_default_txn(
    txn: Txn, user_id: str, kind: str, rule_id: str, column: str, value: int | str
) -> None:
    assert column in ("enabled", "actions")
    txn.execute(
        f"INSERT INTO push_rule_defaults (user_id, kind, rule_id, {column}) VALUES (?, ?, ?, ?)"
        f" ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET {column} = excluded.{column}",
        (user_id, kind, rule_id, value),
    )


def _add_rules_txn(txn: Txn, user_id: str, rules: Iterable[PushRule]) -> None:
    for rule in rules:
        _add_rule_txn(txn, user_id, rule, None, None)


def _users_with_rules_txn(txn: Txn) -> set[str]:
    rows = txn.execute(
        "SELECT user_id FROM push_rules UNION SELECT user_id FROM push_rule_defaults"
    ).fetchall()
    return {row[0] for row in rows}


class PushRuleStore:
    """The push_rules and push_rule_defaults tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def rules_for_users(self, user_ids: Sequence[str]) -> dict[str, StoredPushRules]:
        """Every named user's stored rules and default-rule changes, in one snapshot.

        Returns:
            User id -> what is stored (empty for users with nothing), for every id given.

        Checkpoint: yes.
        """
        return await self._db.run_read("push_rules_for_users", _rules_for_users_txn, user_ids)

    async def users_with_rules(self) -> set[str]:
        """Every user with a rule of their own or a change to a default rule.

        Checkpoint: yes.
        """
        return await self._db.run_read("push_rule_users", _users_with_rules_txn)

    async def add_rule(
        self, user_id: str, rule: PushRule, *, before: str | None, after: str | None
    ) -> AddResult:
        """Add (or replace) one of the user's rules.

        Args:
            rule: the rule; a rule of the same kind and id is replaced (keeping ``enabled``).
            before: put it just before this rule of the same kind (takes precedence).
            after: put it just after this rule of the same kind.

        Returns:
            ``RELATIVE_NOT_FOUND`` (and nothing changed) when `before`/`after` names no rule.

        Checkpoint: yes.
        """
        try:
            return await self._db.run_txn(
                "add_push_rule", _add_rule_or_rollback_txn, user_id, rule, before, after
            )
        except _Rollback:
            return AddResult.RELATIVE_NOT_FOUND

    async def add_rules(self, user_id: str, rules: Sequence[PushRule]) -> None:
        """Add several rules, each as `add_rule` without `before`/`after`. Checkpoint: yes."""
        await self._db.run_txn("add_push_rules", _add_rules_txn, user_id, rules)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        """Delete one of the user's rules; False when there was none. Checkpoint: yes."""
        return await self._db.run_txn("delete_push_rule", _delete_rule_txn, user_id, kind, rule_id)

    async def set_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        """Enable or disable one of the user's rules; False when there is none.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "set_push_rule_enabled",
            _set_user_rule_txn,
            user_id,
            kind,
            rule_id,
            "enabled",
            int(enabled),
        )

    async def set_rule_actions(
        self, user_id: str, kind: str, rule_id: str, actions: Sequence[Any]
    ) -> bool:
        """Replace the actions of one of the user's rules; False when there is none.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "set_push_rule_actions",
            _set_user_rule_txn,
            user_id,
            kind,
            rule_id,
            "actions",
            _dumps(list(actions)),
        )

    async def set_default_enabled(
        self, user_id: str, kind: str, rule_id: str, enabled: bool
    ) -> None:
        """Record the user's ``enabled`` for a server-default rule. Checkpoint: yes."""
        await self._db.run_txn(
            "set_default_push_rule_enabled",
            _set_default_txn,
            user_id,
            kind,
            rule_id,
            "enabled",
            int(enabled),
        )

    async def set_default_actions(
        self, user_id: str, kind: str, rule_id: str, actions: Sequence[Any]
    ) -> None:
        """Record the user's ``actions`` for a server-default rule. Checkpoint: yes."""
        await self._db.run_txn(
            "set_default_push_rule_actions",
            _set_default_txn,
            user_id,
            kind,
            rule_id,
            "actions",
            _dumps(list(actions)),
        )
