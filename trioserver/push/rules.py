"""The push rule model and the server-default ("predefined") rules (spec "Push Rules").

Theory of operation
-------------------
A user's rules are one `PushRuleSet`: every rule in evaluation order, each tagged with its
kind. The order is the spec's: kinds in the order override, content, room, sender, underride,
and within a kind the user's own rules before the server-default ones, except that
``.m.rule.master`` comes before everything (spec "Predefined Rules"; Synapse's
``BASE_PREPEND_OVERRIDE_RULES``). The defaults are built per user because some of them name
the user (``.m.rule.invite_for_me``, ``.m.rule.is_user_mention``, the localpart in
``.m.rule.contains_user_name``). A user may change only ``enabled`` and ``actions`` of a
default rule; those changes are a `DefaultRuleChange`.

The set of defaults is the spec's (v1.16), each exactly as the spec defines it (Synapse adds
``highlight: false`` tweaks, which mean the same as none), plus ``.im.vector.jitsi``, which
Synapse also serves by default; Synapse's other unstable rules are off in its default
configuration and left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

JsonDict = dict[str, Any]

OVERRIDE: Final = "override"
CONTENT: Final = "content"
ROOM: Final = "room"
SENDER: Final = "sender"
UNDERRIDE: Final = "underride"
# The kinds in the order they are evaluated (spec "Push Rules").
KINDS: Final = (OVERRIDE, CONTENT, ROOM, SENDER, UNDERRIDE)
MASTER: Final = ".m.rule.master"
# Spec v1.7: these defaults "should only be enabled if the event does not have an m.mentions
# property" (Synapse skips them then).
LEGACY_MENTION_RULES: Final = frozenset(
    {
        (OVERRIDE, ".m.rule.contains_display_name"),
        (OVERRIDE, ".m.rule.roomnotif"),
        (CONTENT, ".m.rule.contains_user_name"),
    }
)

_NOTIFY: Final = "notify"
_HIGHLIGHT: Final[JsonDict] = {"set_tweak": "highlight"}
_NO_HIGHLIGHT: Final[JsonDict] = {"set_tweak": "highlight", "value": False}
_SOUND: Final[JsonDict] = {"set_tweak": "sound", "value": "default"}
_RING: Final[JsonDict] = {"set_tweak": "sound", "value": "ring"}


@attrs.frozen
class PushRule:
    """One push rule.

    Attributes:
        kind: one of `KINDS`.
        rule_id: for room and sender rules, the room or user id they are about.
        actions: the JSON actions, as stored (legacy ``dont_notify`` included).
        conditions: the JSON conditions of override and underride rules.
        pattern: the glob of a content rule.
        default: a server-default rule.
        enabled: disabled rules never match.
    """

    kind: str
    rule_id: str
    actions: tuple[Any, ...]
    conditions: tuple[JsonDict, ...] = ()
    pattern: str | None = None
    default: bool = False
    enabled: bool = True

    def effective_conditions(self) -> tuple[JsonDict, ...]:
        """The conditions the rule is evaluated with (spec: room, sender and content rules
        are shorthands for one ``event_match``)."""
        if self.kind == ROOM:
            return ({"kind": "event_match", "key": "room_id", "pattern": self.rule_id},)
        if self.kind == SENDER:
            return ({"kind": "event_match", "key": "sender", "pattern": self.rule_id},)
        if self.kind == CONTENT:
            return ({"kind": "event_match", "key": "content.body", "pattern": self.pattern},)
        return self.conditions

    def to_json(self) -> JsonDict:
        """The rule as ``GET /pushrules/`` shows it."""
        body: JsonDict = {
            "rule_id": self.rule_id,
            "default": self.default,
            "enabled": self.enabled,
            "actions": list(self.actions),
        }
        if self.kind in (OVERRIDE, UNDERRIDE):
            body["conditions"] = list(self.conditions)
        elif self.kind == CONTENT:
            body["pattern"] = self.pattern
        return body


@attrs.frozen
class DefaultRuleChange:
    """A user's change to a server-default rule; None leaves that attribute as shipped."""

    enabled: bool | None = None
    actions: tuple[Any, ...] | None = None


@attrs.frozen
class PushRuleSet:
    """All of one user's rules, in evaluation order."""

    rules: tuple[PushRule, ...]

    def find(self, kind: str, rule_id: str) -> PushRule | None:
        """The rule of that kind and id, or None."""
        for rule in self.rules:
            if rule.kind == kind and rule.rule_id == rule_id:
                return rule
        return None

    def kind_json(self, kind: str) -> list[JsonDict]:
        """The rules of one kind as ``GET /pushrules/global/{kind}/`` shows them."""
        return [rule.to_json() for rule in self.rules if rule.kind == kind]

    def global_json(self) -> JsonDict:
        """``GET /pushrules/global/``: kind -> rules (every kind present, maybe empty)."""
        return {kind: self.kind_json(kind) for kind in KINDS}

    def to_json(self) -> JsonDict:
        """``GET /pushrules/``, also the content of ``m.push_rules`` account data."""
        return {"global": self.global_json()}


def _event_match(key: str, pattern: str) -> JsonDict:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _default(kind: str, rule_id: str, conditions: list[JsonDict], actions: list[Any]) -> PushRule:
    return PushRule(kind, rule_id, tuple(actions), tuple(conditions), default=True)


def _master() -> PushRule:
    return PushRule(OVERRIDE, MASTER, (), (), default=True, enabled=False)


def _default_overrides(user_id: str) -> list[PushRule]:
    # Spec "Default Override Rules", in order.
    rules: list[tuple[str, list[JsonDict], list[Any]]] = [
        (".m.rule.suppress_notices", [_event_match("content.msgtype", "m.notice")], []),
        (
            ".m.rule.invite_for_me",
            [
                _event_match("type", "m.room.member"),
                _event_match("content.membership", "invite"),
                _event_match("state_key", user_id),
            ],
            [_NOTIFY, _SOUND],
        ),
        (".m.rule.member_event", [_event_match("type", "m.room.member")], []),
        (
            ".m.rule.is_user_mention",
            [
                {
                    "kind": "event_property_contains",
                    "key": r"content.m\.mentions.user_ids",
                    "value": user_id,
                }
            ],
            [_NOTIFY, _SOUND, _HIGHLIGHT],
        ),
        (
            ".m.rule.contains_display_name",
            [{"kind": "contains_display_name"}],
            [_NOTIFY, _SOUND, _HIGHLIGHT],
        ),
        (
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": r"content.m\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            [_NOTIFY, _HIGHLIGHT],
        ),
        (
            ".m.rule.roomnotif",
            [
                _event_match("content.body", "@room"),
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            [_NOTIFY, _HIGHLIGHT],
        ),
        (
            ".m.rule.tombstone",
            [_event_match("type", "m.room.tombstone"), _event_match("state_key", "")],
            [_NOTIFY, _HIGHLIGHT],
        ),
        (".m.rule.reaction", [_event_match("type", "m.reaction")], []),
        (
            ".m.rule.room.server_acl",
            [_event_match("type", "m.room.server_acl"), _event_match("state_key", "")],
            [],
        ),
        (
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": r"content.m\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
    ]
    return [_default(OVERRIDE, rule_id, conds, actions) for rule_id, conds, actions in rules]


def _default_content(user_id: str) -> list[PushRule]:
    localpart = user_id[1:].split(":", 1)[0]
    actions = (_NOTIFY, _SOUND, _HIGHLIGHT)
    return [
        PushRule(CONTENT, ".m.rule.contains_user_name", actions, pattern=localpart, default=True)
    ]


def _one_to_one(event_type: str) -> list[JsonDict]:
    return [{"kind": "room_member_count", "is": "2"}, _event_match("type", event_type)]


def _default_underrides() -> list[PushRule]:
    # Spec "Default Underride Rules", in order, then Synapse's Jitsi widget rule.
    rules: list[tuple[str, list[JsonDict], list[Any]]] = [
        (".m.rule.call", [_event_match("type", "m.call.invite")], [_NOTIFY, _RING]),
        (
            ".m.rule.encrypted_room_one_to_one",
            _one_to_one("m.room.encrypted"),
            [_NOTIFY, _SOUND],
        ),
        (
            ".m.rule.room_one_to_one",
            _one_to_one("m.room.message"),
            [_NOTIFY, _SOUND],
        ),
        (".m.rule.message", [_event_match("type", "m.room.message")], [_NOTIFY]),
        (
            ".m.rule.encrypted",
            [_event_match("type", "m.room.encrypted")],
            [_NOTIFY],
        ),
        (
            ".im.vector.jitsi",
            [
                _event_match("type", "im.vector.modular.widgets"),
                _event_match("content.type", "jitsi"),
                _event_match("state_key", "*"),
            ],
            [_NOTIFY, _NO_HIGHLIGHT],
        ),
    ]
    return [_default(UNDERRIDE, rule_id, conds, actions) for rule_id, conds, actions in rules]


def _apply_change(rule: PushRule, change: DefaultRuleChange | None) -> PushRule:
    if change is None:
        return rule
    if change.enabled is not None:
        rule = attrs.evolve(rule, enabled=change.enabled)
    if change.actions is not None:
        rule = attrs.evolve(rule, actions=change.actions)
    return rule


def _default_rules(user_id: str) -> list[PushRule]:
    return [
        _master(),
        *_default_overrides(user_id),
        *_default_content(user_id),
        *_default_underrides(),
    ]


# (kind, rule id) of every server-default rule: the same for every user.
DEFAULT_RULE_IDS: Final = frozenset((r.kind, r.rule_id) for r in _default_rules("@u:localhost"))
# The defaults that do not name the user, as one object each for every user (and their
# compiled form, see `evaluator`): tens of thousands of cached users share them.
_SHARED: Final = {
    (a.kind, a.rule_id): a
    for a, b in zip(_default_rules("@a:a"), _default_rules("@b:b"), strict=True)
    if a == b
}


def is_shared_default(rule: PushRule) -> bool:
    """Whether `rule` is the one shared object of an unchanged default rule."""
    return _SHARED.get((rule.kind, rule.rule_id)) is rule


def _user_defaults(user_id: str) -> list[PushRule]:
    return [_SHARED.get((r.kind, r.rule_id), r) for r in _default_rules(user_id)]


def build_rule_set(
    user_id: str,
    user_rules: Sequence[PushRule],
    changes: Mapping[tuple[str, str], DefaultRuleChange],
) -> PushRuleSet:
    """One user's rules in evaluation order.

    Args:
        user_id: whose rules; the defaults that name the user are filled in for them.
        user_rules: the user's own rules, each kind's in precedence order (highest first).
        changes: (kind, rule id) -> the user's change to that server-default rule.
    """
    by_kind: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
    for rule in user_rules:
        by_kind[rule.kind].append(rule)
    defaults: dict[str, list[PushRule]] = {kind: [] for kind in KINDS}
    master, *rest = _user_defaults(user_id)
    for rule in rest:
        defaults[rule.kind].append(_apply_change(rule, changes.get((rule.kind, rule.rule_id))))
    ordered = [_apply_change(master, changes.get((OVERRIDE, MASTER)))]
    for kind in KINDS:
        ordered += by_kind[kind]
        ordered += defaults[kind]
    return PushRuleSet(tuple(ordered))
