"""Evaluating push rules against an event (spec "Push Rules", "Conditions").

Theory of operation
-------------------
This runs on the send path once per local member of the room, so the work is split three ways:

* `compile_push_rules` turns one user's `PushRuleSet` into a `CompiledPushRules` once (the
  handler caches it until the user changes a rule): disabled rules and rules with a condition
  that can never hold (an unknown ``kind``, a malformed field) are dropped, globs become
  compiled regexes or lower-cased literals, ``room_member_count`` is parsed, and legacy actions
  are removed.
* `prepare_event` flattens an event once into dotted keys (``content.m\\.mentions.room``: dots
  and backslashes in a property name are escaped with a backslash, spec "Conditions") and
  memoises lower-cased strings; the same `PreparedEvent` is handed to every member's rules.
* `CompiledPushRules.actions_for` walks the rules in order and returns the first match's
  actions, ``[]`` when nothing matches.

Matching follows the spec and Synapse: ``event_match`` is a case-insensitive glob (``*``,
``?``) over the whole string value, except for ``content.body``, where it matches a substring
between word boundaries; ``contains_display_name`` does the same with the user's display name;
``event_property_is`` / ``event_property_contains`` compare exactly, telling ``true`` from
``1``; a condition kind the server does not know never matches. The legacy actions
``dont_notify`` and ``coalesce`` are ignored (spec v1.7), so a rule with only those matches and
notifies no one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from trioserver.push.glob import WORD_END, WORD_START, Glob
from trioserver.push.rules import LEGACY_MENTION_RULES, is_shared_default

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.push.rules import PushRule, PushRuleSet

JsonDict = dict[str, Any]
# Spec "Conditions", sender_notification_permission: the level when power_levels has none.
DEFAULT_NOTIFICATION_LEVEL: Final = 50
# How deep into an event's objects keys are made (rules look a few levels deep).
MAX_FLATTEN_DEPTH: Final = 64
_LEGACY_ACTIONS: Final = frozenset({"dont_notify", "coalesce"})
_MEMBER_COUNT: Final = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")


@attrs.frozen
class PushContext:
    """Facts about the room at the event, computed once per event.

    Attributes:
        room_member_count: joined members.
        sender_power_level: the sender's power level.
        notification_levels: ``power_levels.notifications``, e.g. ``{"room": 50}``.
    """

    room_member_count: int
    sender_power_level: int
    notification_levels: Mapping[str, int] = attrs.field(factory=dict)


def _escape(name: str) -> str:
    if "." not in name and "\\" not in name:
        return name
    return name.replace("\\", "\\\\").replace(".", "\\.")


def _flatten(event: Mapping[str, Any]) -> dict[str, Any]:
    # Iterative and bounded: an event's depth is the sender's choice, and keys get longer
    # with it (no rule looks that deep).
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[str, Any], int]] = [("", event, 0)]
    while stack:
        prefix, obj, depth = stack.pop()
        for name, value in obj.items():
            key = prefix + _escape(name)
            if not isinstance(value, Mapping):
                flat[key] = value
            elif depth < MAX_FLATTEN_DEPTH:
                stack.append((key + ".", value, depth + 1))
    return flat


class PreparedEvent:
    """An event flattened once for the rules of every member of its room."""

    __slots__ = ("_lowered", "flat", "has_mentions")

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.flat: dict[str, Any] = _flatten(event)
        self._lowered: dict[str, str | None] = {}
        content = event.get("content")
        # Spec v1.7: an event with m.mentions is not matched by the legacy mention rules.
        self.has_mentions = isinstance(content, Mapping) and "m.mentions" in content

    def lowered(self, key: str) -> str | None:
        """The lower-cased string at `key`, or None when it is absent or not a string."""
        try:
            return self._lowered[key]
        except KeyError:
            value = self.flat.get(key)
            result = value.lower() if isinstance(value, str) else None
            self._lowered[key] = result
            return result


def prepare_event(event: Mapping[str, Any]) -> PreparedEvent:
    """Flatten `event` (a JSON dict) for `CompiledPushRules.actions_for`."""
    return PreparedEvent(event)


class _Condition:
    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        raise NotImplementedError


class _EventMatchLiteral(_Condition):
    __slots__ = ("key", "literal")

    def __init__(self, key: str, literal: str) -> None:
        self.key = key
        self.literal = literal

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        return ev.lowered(self.key) == self.literal


class _EventMatchGlob(_Condition):
    __slots__ = ("glob", "key")

    def __init__(self, key: str, glob: Glob) -> None:
        self.key = key
        self.glob = glob

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        value = ev.lowered(self.key)
        return value is not None and self.glob.matches(value)


@functools.lru_cache(maxsize=4096)
def _display_name_regex(name: str) -> re.Pattern[str]:
    # Shared by every user with that display name: compiled once each.
    return re.compile(WORD_START + re.escape(name) + WORD_END, re.DOTALL)


def _event_match(cond: Mapping[str, Any]) -> _Condition | None:
    key, pattern = cond.get("key"), cond.get("pattern")
    if not isinstance(key, str) or not isinstance(pattern, str):
        return None
    # Case-insensitive: patterns and values are compared lower-cased.
    pattern = pattern.lower()
    if key == "content.body":
        # Spec: for content.body the pattern matches a substring between word boundaries.
        return _EventMatchGlob(key, Glob(pattern, words=True))
    if "*" not in pattern and "?" not in pattern:
        return _EventMatchLiteral(key, pattern)
    return _EventMatchGlob(key, Glob(pattern, words=False))


def _same(a: object, b: object) -> bool:
    # JSON equality: true is not 1 (Python's bool is an int).
    return type(a) is type(b) and a == b


def _is_simple_value(value: object) -> bool:
    return value is None or isinstance(value, str | int | bool)


class _PropertyIs(_Condition):
    __slots__ = ("key", "value")

    def __init__(self, key: str, value: object) -> None:
        self.key = key
        self.value = value

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        flat = ev.flat
        return self.key in flat and _same(flat[self.key], self.value)


class _PropertyContains(_Condition):
    __slots__ = ("key", "value")

    def __init__(self, key: str, value: object) -> None:
        self.key = key
        self.value = value

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        values = ev.flat.get(self.key)
        return isinstance(values, list) and any(_same(v, self.value) for v in values)


def _property(
    cond: Mapping[str, Any], cls: type[_PropertyIs | _PropertyContains]
) -> _Condition | None:
    key = cond.get("key")
    if not isinstance(key, str) or "value" not in cond or not _is_simple_value(cond["value"]):
        return None
    return cls(key, cond["value"])


class _ContainsDisplayName(_Condition):
    __slots__ = ()

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        if not display_name:
            return False
        body = ev.lowered("content.body")
        name = display_name.lower()
        if body is None or name not in body:
            return False
        return _display_name_regex(name).search(body) is not None


class _MemberCount(_Condition):
    __slots__ = ("number", "op")

    def __init__(self, op: str, number: int) -> None:
        self.op = op
        self.number = number

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        count, number = ctx.room_member_count, self.number
        match self.op:
            case "==":
                return count == number
            case "<":
                return count < number
            case ">":
                return count > number
            case "<=":
                return count <= number
            case _:
                return count >= number


def _member_count(cond: Mapping[str, Any]) -> _Condition | None:
    spec = cond.get("is")
    if not isinstance(spec, str):
        return None
    parsed = _MEMBER_COUNT.fullmatch(spec)
    if parsed is None:
        return None
    return _MemberCount(parsed.group(1) or "==", int(parsed.group(2)))


class _SenderPermission(_Condition):
    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def matches(
        self, ev: PreparedEvent, ctx: PushContext, user_id: str, display_name: str | None
    ) -> bool:
        required = ctx.notification_levels.get(self.key, DEFAULT_NOTIFICATION_LEVEL)
        if isinstance(required, bool) or not isinstance(required, int):
            required = DEFAULT_NOTIFICATION_LEVEL
        return ctx.sender_power_level >= required


def _sender_permission(cond: Mapping[str, Any]) -> _Condition | None:
    key = cond.get("key")
    return _SenderPermission(key) if isinstance(key, str) else None


def _compile_condition(cond: object) -> _Condition | None:
    """The compiled condition, or None for one that can never match (spec: unknown kinds)."""
    if not isinstance(cond, Mapping):
        return None
    match cond.get("kind"):
        case "event_match":
            return _event_match(cond)
        case "event_property_is":
            return _property(cond, _PropertyIs)
        case "event_property_contains":
            return _property(cond, _PropertyContains)
        case "contains_display_name":
            return _ContainsDisplayName()
        case "room_member_count":
            return _member_count(cond)
        case "sender_notification_permission":
            return _sender_permission(cond)
        case _:
            return None


@attrs.frozen
class _CompiledRule:
    rule_id: str
    conditions: tuple[_Condition, ...]
    actions: tuple[Any, ...]
    legacy_mention: bool = False


class CompiledPushRules:
    """One user's enabled rules, ready to evaluate (see the module docstring).

    The rules are indexed by the event type they require (most have an ``event_match`` on
    ``type`` with a literal pattern): an event is only checked against the rules for its type
    and those that do not name one, still in rule order.
    """

    __slots__ = ("_by_type", "_untyped")

    def __init__(self, rules: Sequence[tuple[str | None, _CompiledRule]]) -> None:
        types = {t for t, _ in rules if t is not None}
        self._untyped = tuple(rule for t, rule in rules if t is None)
        self._by_type = {
            event_type: tuple(rule for t, rule in rules if t is None or t == event_type)
            for event_type in types
        }

    def _first(
        self,
        event: Mapping[str, Any] | PreparedEvent,
        ctx: PushContext,
        user_id: str,
        display_name: str | None,
    ) -> _CompiledRule | None:
        ev = event if isinstance(event, PreparedEvent) else PreparedEvent(event)
        has_mentions = ev.has_mentions
        event_type = ev.lowered("type")
        candidates = self._untyped if event_type is None else self._by_type.get(event_type)
        for rule in self._untyped if candidates is None else candidates:
            if has_mentions and rule.legacy_mention:
                continue
            for cond in rule.conditions:
                if not cond.matches(ev, ctx, user_id, display_name):
                    break
            else:
                return rule
        return None

    def actions_for(
        self,
        event: Mapping[str, Any] | PreparedEvent,
        ctx: PushContext,
        *,
        user_id: str,
        display_name: str | None,
    ) -> list[Any]:
        """The actions of the first rule that matches; ``[]`` when none does.

        Args:
            event: the event as a JSON dict, or `prepare_event` of it (cheaper when the same
                event is evaluated for many users).
            ctx: facts about the room at the event.
            user_id: whose rules these are.
            display_name: the user's display name in the room (``contains_display_name``).
        """
        rule = self._first(event, ctx, user_id, display_name)
        return [] if rule is None else list(rule.actions)

    def matching_rule_id(
        self,
        event: Mapping[str, Any] | PreparedEvent,
        ctx: PushContext,
        *,
        user_id: str,
        display_name: str | None,
    ) -> str | None:
        """The id of the first rule that matches (for tests and debugging)."""
        rule = self._first(event, ctx, user_id, display_name)
        return None if rule is None else rule.rule_id


def _required_type(conditions: Sequence[_Condition]) -> tuple[str | None, bool]:
    """(the event type a rule's literal ``type`` conditions require, whether they can all
    hold)."""
    types = {
        c.literal for c in conditions if isinstance(c, _EventMatchLiteral) and c.key == "type"
    }
    if len(types) > 1:
        return None, False
    return (types.pop() if types else None), True


def _compile_rule(rule: PushRule) -> tuple[str | None, _CompiledRule] | None:
    conditions: list[_Condition] = []
    for raw in rule.effective_conditions():
        cond = _compile_condition(raw)
        if cond is None:
            return None
        conditions.append(cond)
    event_type, possible = _required_type(conditions)
    if not possible:
        return None
    if event_type is not None:
        # The index checks it (see CompiledPushRules).
        conditions = [
            c for c in conditions if not (isinstance(c, _EventMatchLiteral) and c.key == "type")
        ]
    actions = tuple(a for a in rule.actions if not (isinstance(a, str) and a in _LEGACY_ACTIONS))
    legacy = rule.default and (rule.kind, rule.rule_id) in LEGACY_MENTION_RULES
    return event_type, _CompiledRule(rule.rule_id, tuple(conditions), actions, legacy)


_CompiledEntry = tuple[str | None, _CompiledRule] | None
# Unchanged defaults that name no user are compiled once for everyone (`is_shared_default`).
_SHARED_COMPILED: dict[tuple[str, str], _CompiledEntry] = {}


def _compile_maybe_shared(rule: PushRule) -> _CompiledEntry:
    if not is_shared_default(rule):
        return _compile_rule(rule)
    key = (rule.kind, rule.rule_id)
    if key not in _SHARED_COMPILED:
        _SHARED_COMPILED[key] = _compile_rule(rule)
    return _SHARED_COMPILED[key]


def compile_push_rules(rules: PushRuleSet) -> CompiledPushRules:
    """Compile a user's rule set once for many `CompiledPushRules.actions_for` calls."""
    compiled = [_compile_maybe_shared(rule) for rule in rules.rules if rule.enabled]
    return CompiledPushRules([c for c in compiled if c is not None])


def is_notify(actions: Sequence[Any]) -> bool:
    """Whether the actions notify (spec: the ``notify`` action)."""
    return "notify" in actions


def tweak(actions: Sequence[Any], name: str) -> Any:
    """The value of the ``set_tweak`` named `name` (``highlight`` given without a value is
    true, spec "Actions"), or None when the actions do not set it."""
    for action in actions:
        if isinstance(action, Mapping) and action.get("set_tweak") == name:
            return action.get("value", True) if name == "highlight" else action.get("value")
    return None


def is_highlight(actions: Sequence[Any]) -> bool:
    """Whether the actions highlight (a ``highlight`` tweak that is absent counts as false)."""
    return tweak(actions, "highlight") is True
