"""``/pushrules/`` (client-server API "Push Rules API").

The path is parsed here rather than by the route table because its shape decides the answer,
as in Synapse (and SyTest 61push/80torture): ``GET /pushrules`` is 404; ``/pushrules/global``
and ``/pushrules/global/{kind}`` without their trailing slash, an unknown scope (only
``global`` exists), kind or attribute, and a missing or empty rule id are 400
``M_UNRECOGNIZED``. Each segment is percent-decoded on its own, so an encoded ``/`` stays in
its segment (and is then refused as part of a rule id). A user only ever reaches their own
rules: every path is relative to the requester.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from trioserver.api.http import CLIENT, JsonDict, Request, Response, Route, route
from trioserver.errors import MatrixError
from trioserver.handlers.push_rules import check_kind

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

_PREFIX = "/pushrules"
_ATTRIBUTES = ("enabled", "actions")


def _unrecognized(message: str = "Unrecognised request", status: int = 400) -> MatrixError:
    return MatrixError("M_UNRECOGNIZED", message, status=status)


def _segments(request: Request) -> list[str]:
    """The path after ``/pushrules/``, split and decoded (404 for ``/pushrules`` itself)."""
    raw = request.path[request.path.index(_PREFIX) + len(_PREFIX) :]
    if not raw.startswith("/"):
        raise _unrecognized("Unrecognized request", status=404)
    return [unquote(part) for part in raw[1:].split("/")]


def _trailing_slash() -> MatrixError:
    return _unrecognized("Unrecognised request: You probably wanted a trailing slash")


def _rule_path(parts: list[str]) -> tuple[str, str, str | None]:
    """(kind, rule id, attribute) of ``global/{kind}/{ruleId}[/{attr}]`` for PUT/DELETE."""
    if len(parts) < 3 or parts[0] != "global" or not parts[2]:
        raise _unrecognized()
    check_kind(parts[1])
    if len(parts) > 4 or (len(parts) == 4 and parts[3] and parts[3] not in _ATTRIBUTES):
        raise _unrecognized()
    attr = parts[3] if len(parts) == 4 and parts[3] else None
    return parts[1], parts[2], attr


def _json_value(request: Request) -> Any:
    # PUT .../enabled takes a bare boolean too (Synapse), so any JSON value is read here.
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise MatrixError("M_NOT_JSON", "Content not JSON.") from None


async def get_push_rules(deps: ApiDeps, request: Request) -> JsonDict | Response:
    """GET /pushrules/, /pushrules/global/, /pushrules/global/{kind}/ and
    /pushrules/global/{kind}/{ruleId}[/{attr}]."""
    parts = _segments(request)
    user_id = request.requester.user_id
    if parts == [""]:
        return await deps.push_rules.rules_json(user_id)
    if parts[0] != "global":
        raise _unrecognized()
    if len(parts) == 1:
        raise _trailing_slash()
    if parts[1] == "" and len(parts) == 2:
        return (await deps.push_rules.rule_set(user_id)).global_json()
    kind = parts[1]
    check_kind(kind)
    if len(parts) == 2:
        raise _trailing_slash()
    if parts[2] == "" and len(parts) == 3:
        return Response((await deps.push_rules.rule_set(user_id)).kind_json(kind))
    if not parts[2] or len(parts) > 4:
        raise _unrecognized()
    rule = (await deps.push_rules.get_rule(user_id, kind, parts[2])).to_json()
    if len(parts) == 3:
        return rule
    # Synapse answers any attribute the rule has ({"enabled": ...}, {"actions": ...}, ...).
    if parts[3] not in rule:
        raise _unrecognized()
    return {parts[3]: rule[parts[3]]}


async def put_push_rule(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /pushrules/global/{kind}/{ruleId} (``before``/``after``) and its /enabled and
    /actions."""
    kind, rule_id, attr = _rule_path(_segments(request))
    user_id = request.requester.user_id
    body = _json_value(request)
    if attr == "enabled":
        await deps.push_rules.set_enabled(user_id, kind, rule_id, body)
    elif attr == "actions":
        await deps.push_rules.set_actions(user_id, kind, rule_id, body)
    else:
        before = request.query_param("before") or None
        after = request.query_param("after") or None
        await deps.push_rules.put_rule(user_id, kind, rule_id, body, before=before, after=after)
    return {}


async def delete_push_rule(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /pushrules/global/{kind}/{ruleId}."""
    kind, rule_id, attr = _rule_path(_segments(request))
    if attr is not None:
        raise _unrecognized()
    await deps.push_rules.delete_rule(request.requester.user_id, kind, rule_id)
    return {}


_PATH = f"{CLIENT}{_PREFIX}{{rest:path}}"

ROUTES: list[Route[ApiDeps]] = [
    route("GET", _PATH, get_push_rules, auth="required"),
    route("PUT", _PATH, put_push_rule, auth="required"),
    route("DELETE", _PATH, delete_push_rule, auth="required"),
]
