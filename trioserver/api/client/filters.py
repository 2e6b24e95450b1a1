"""Sync filters (client-server API, "Filtering")."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.errors import MatrixError
from trioserver.handlers.filter_schema import validate_filter

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Not str.isdigit(): it and int() also accept non-ASCII digits (superscripts, Arabic-Indic).
_FILTER_ID = re.compile(r"[0-9]+")


def _own_user(request: Request, verb: str) -> str:
    user_id = request.path_params["user"]
    if user_id != request.requester.user_id:
        raise MatrixError("M_FORBIDDEN", f"Cannot {verb} filters for other users")
    return user_id


async def post_filter(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /user/{userId}/filter."""
    user_id = _own_user(request, "create")
    body = request.json()
    validate_filter(body)
    filter_id = await deps.filters.add_filter(user_id, body)
    return {"filter_id": str(filter_id)}


async def get_filter(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /user/{userId}/filter/{filterId}."""
    user_id = _own_user(request, "get")
    raw_id = request.path_params["filter"]
    if not _FILTER_ID.fullmatch(raw_id):
        raise MatrixError("M_UNKNOWN", "Invalid filter_id")
    filter_id = int(raw_id)
    # Larger ids are never issued (and do not fit the database's integers).
    found = await deps.filters.get_filter(user_id, filter_id) if filter_id < 2**63 else None
    if found is None:
        raise MatrixError("M_NOT_FOUND", "No such filter")
    return found


ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/user/{{user}}/filter", post_filter, auth="required", local=True),
    route("GET", f"{CLIENT}/user/{{user}}/filter/{{filter}}", get_filter, auth="required"),
]
