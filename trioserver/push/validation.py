"""Checking the bodies of ``PUT /pushrules/global/{kind}/{ruleId}[/enabled|/actions]``.

Errors (400): a missing field is ``M_MISSING_PARAM``, a field of the wrong shape or value
``M_INVALID_PARAM``, a body that is not a JSON object ``M_BAD_JSON``. Synapse answers all of
these with a 400 (``M_UNKNOWN``); the errcodes here say which of them it was. Conditions of a
kind the server does not know are accepted and never match (spec "Conditions"), but the known
kinds must have their fields.
"""

from __future__ import annotations

import re
from typing import Any, Final

from trioserver.errors import MatrixError
from trioserver.push.rules import CONTENT, OVERRIDE, UNDERRIDE, PushRule

JsonDict = dict[str, Any]
MAX_RULE_ID_BYTES: Final = 512
MAX_CONDITIONS: Final = 32
MAX_ACTIONS: Final = 32
# Globs are matched in time proportional to value length x pattern length (see push.glob).
MAX_PATTERN_BYTES: Final = 512
_LEGAL_STRING_ACTIONS: Final = frozenset({"notify", "dont_notify", "coalesce"})
_MEMBER_COUNT: Final = re.compile(r"(==|<=|>=|<|>)?[0-9]+")


def _invalid(message: str) -> MatrixError:
    return MatrixError("M_INVALID_PARAM", message, status=400)


def check_rule_id(rule_id: str) -> None:
    """Raises MatrixError (400) for an id a rule cannot have (Synapse: no slashes)."""
    if "/" in rule_id or "\\" in rule_id:
        raise _invalid("rule_id may not contain slashes")
    if len(rule_id.encode()) > MAX_RULE_ID_BYTES:
        raise _invalid(f"rule_id is longer than {MAX_RULE_ID_BYTES} bytes")


def check_actions(actions: object) -> tuple[Any, ...]:
    """The actions, checked (spec "Actions"; legacy ``dont_notify``/``coalesce`` allowed).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for anything but a list of known actions.
    """
    if not isinstance(actions, list):
        raise _invalid("'actions' must be a list")
    if len(actions) > MAX_ACTIONS:
        raise _invalid(f"At most {MAX_ACTIONS} actions are allowed")
    for action in actions:
        if isinstance(action, str) and action in _LEGAL_STRING_ACTIONS:
            continue
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            continue
        raise _invalid(f"Unrecognised action: {action!r}"[:200])
    return tuple(actions)


def _check_pattern(pattern: str) -> None:
    if len(pattern.encode()) > MAX_PATTERN_BYTES:
        raise _invalid(f"'pattern' is longer than {MAX_PATTERN_BYTES} bytes")


def _check_string(cond: JsonDict, field: str) -> None:
    if not isinstance(cond.get(field), str):
        raise _invalid(f"Condition of kind {cond['kind']} needs a string '{field}'")


def _check_condition(cond: object) -> None:
    if not isinstance(cond, dict):
        raise _invalid("Each condition must be an object")
    kind = cond.get("kind")
    if not isinstance(kind, str):
        raise _invalid("Condition without 'kind'")
    match kind:
        case "event_match":
            _check_string(cond, "key")
            _check_string(cond, "pattern")
            _check_pattern(cond["pattern"])
        case "event_property_is" | "event_property_contains":
            _check_string(cond, "key")
            value = cond.get("value", ...)
            if not (value is None or isinstance(value, str | int | bool)):
                raise _invalid(f"Condition of kind {kind} needs a string, integer, bool or null")
        case "room_member_count":
            spec = cond.get("is")
            if not isinstance(spec, str) or _MEMBER_COUNT.fullmatch(spec) is None:
                raise _invalid("room_member_count needs 'is' like '2', '==2', '<2' or '>=2'")
        case "sender_notification_permission":
            _check_string(cond, "key")
        case _:
            pass


def check_conditions(conditions: object) -> tuple[JsonDict, ...]:
    """The conditions of an override or underride rule, checked.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when they are not a list of valid conditions.
    """
    if not isinstance(conditions, list):
        raise _invalid("'conditions' must be a list")
    if len(conditions) > MAX_CONDITIONS:
        raise _invalid(f"At most {MAX_CONDITIONS} conditions are allowed")
    for cond in conditions:
        _check_condition(cond)
    return tuple(conditions)


def _require(body: JsonDict, field: str, message: str) -> Any:
    if field not in body:
        raise MatrixError("M_MISSING_PARAM", message, status=400)
    return body[field]


def rule_from_request(kind: str, rule_id: str, body: object) -> PushRule:
    """The user rule a ``PUT /pushrules/global/{kind}/{ruleId}`` body describes.

    Raises:
        MatrixError: 400 when the body does not fit the kind (override/underride need
            ``conditions``, content rules ``pattern``; every rule ``actions``).
    """
    if not isinstance(body, dict):
        raise MatrixError("M_BAD_JSON", "Content must be a JSON object", status=400)
    conditions: tuple[JsonDict, ...] = ()
    pattern = None
    if kind in (OVERRIDE, UNDERRIDE):
        conditions = check_conditions(_require(body, "conditions", "Missing 'conditions'"))
    elif kind == CONTENT:
        pattern = _require(body, "pattern", "Content rule missing 'pattern'")
        if not isinstance(pattern, str):
            raise _invalid("'pattern' must be a string")
        _check_pattern(pattern)
    actions = check_actions(_require(body, "actions", "No actions found"))
    return PushRule(kind, rule_id, actions, conditions, pattern=pattern)


def enabled_from_request(body: object) -> bool:
    """The value of a ``PUT .../enabled`` body (``{"enabled": bool}``; Synapse also takes a
    bare boolean).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when it is not a boolean.
    """
    if isinstance(body, dict) and "enabled" in body:
        body = body["enabled"]
    if not isinstance(body, bool):
        raise _invalid("Value for 'enabled' must be boolean")
    return body


def actions_from_request(body: object) -> tuple[Any, ...]:
    """The value of a ``PUT .../actions`` body (``{"actions": [...]}``).

    Raises:
        MatrixError: 400 when it is not an object with valid actions.
    """
    if not isinstance(body, dict):
        raise MatrixError("M_BAD_JSON", "Content must be a JSON object", status=400)
    return check_actions(_require(body, "actions", "Missing 'actions'"))
