"""``/relations`` and ``/threads`` (client-server API, "Relationships between events").

The rules live in `handlers.relations`; this module parses the query: a bad ``dir``,
``limit``, ``recurse`` or ``include`` is 400 ``M_INVALID_PARAM``, as is a bad token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT_V1, JsonDict, Request, Route, route
from trioserver.api.params import query_bool, query_int
from trioserver.errors import MatrixError
from trioserver.handlers.relations import RelationsQuery

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Synapse: /relations defaults to 5 events and caps at 1000 (as /messages); /threads
# defaults to 5 roots (capped here at 100: each root carries a thread summary).
DEFAULT_LIMIT = 5
MAX_RELATIONS_LIMIT = 1000
MAX_THREADS_LIMIT = 100


def _choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query_param(name)
    if value is None:
        return default
    if value not in choices:
        raise MatrixError(
            "M_INVALID_PARAM", f"Query parameter '{name}' must be one of {', '.join(choices)}"
        )
    return value


async def get_relations(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]."""
    params = request.path_params
    query = RelationsQuery(
        rel_type=params.get("rel_type"),
        event_type=params.get("event_type"),
        from_token=request.query_param("from") or None,
        to_token=request.query_param("to") or None,
        # Spec: `dir` defaults to `b` here (unlike /messages).
        backwards=_choice(request, "dir", ("b", "f"), "b") == "b",
        limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_RELATIONS_LIMIT),
        recurse=query_bool(request, "recurse", False),
    )
    return await deps.relations.get_relations(
        request.requester, params["room"], params["event"], query
    )


async def get_threads(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/threads (``include=all|participated``, ``from``, ``limit``)."""
    include = _choice(request, "include", ("all", "participated"), "all")
    return await deps.relations.get_threads(
        request.requester,
        request.path_params["room"],
        participated_only=include == "participated",
        from_token=request.query_param("from") or None,
        # Spec: "Must be an integer greater than zero".
        limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_THREADS_LIMIT),
    )


_RELATIONS = f"{CLIENT_V1}/rooms/{{room}}/relations/{{event}}"

ROUTES: list[Route[ApiDeps]] = [
    route("GET", _RELATIONS, get_relations, auth="required", guest=True),
    route("GET", f"{_RELATIONS}/{{rel_type}}", get_relations, auth="required", guest=True),
    route(
        "GET",
        f"{_RELATIONS}/{{rel_type}}/{{event_type}}",
        get_relations,
        auth="required",
        guest=True,
    ),
    route("GET", f"{CLIENT_V1}/rooms/{{room}}/threads", get_threads, auth="required"),
]
