"""Questions to other servers that need no room: directory and profile queries
(Server-Server API, "Querying for information"). They work on every instance."""

from __future__ import annotations

from typing import Any

from trioserver.errors import MatrixError
from trioserver.events import get_server_name

FED = "/_matrix/federation"


def _unavailable(what: str, err: Exception) -> MatrixError:
    if getattr(err, "status", None) == 404:
        return MatrixError("M_NOT_FOUND", f"{what} not found")
    return MatrixError("M_UNKNOWN", f"Could not ask for the {what.lower()}: {err}", status=502)


async def query_alias(client: Any, alias: str) -> tuple[str, list[str]]:
    """Resolve an alias of another server (``/query/directory``): room id and servers.

    Raises:
        MatrixError: 404 when the server does not know it, 502 when it cannot be asked.
    """
    try:
        answer = await client.get_json(
            get_server_name(alias), f"{FED}/v1/query/directory", query={"room_alias": alias}
        )
    except Exception as err:  # any failure of the remote server, said as one
        raise _unavailable("Room alias", err) from None
    room_id = answer.get("room_id") if isinstance(answer, dict) else None
    if not isinstance(room_id, str):
        raise MatrixError("M_NOT_FOUND", "Room alias not found")
    servers = answer.get("servers")
    listed = servers if isinstance(servers, list) else []
    return room_id, [s for s in listed if isinstance(s, str)]


async def query_profile(client: Any, user_id: str, field: str | None) -> dict[str, Any]:
    """A user's profile from their server (``/query/profile``); only string fields.

    Raises:
        MatrixError: 404 when the server has no such profile, 502 when it cannot be asked.
    """
    query = {"user_id": user_id}
    if field is not None:
        query["field"] = field
    try:
        answer = await client.get_json(
            get_server_name(user_id), f"{FED}/v1/query/profile", query=query
        )
    except Exception as err:  # any failure of the remote server, said as one
        raise _unavailable("Profile", err) from None
    if not isinstance(answer, dict):
        return {}
    return {k: v for k, v in answer.items() if isinstance(k, str) and isinstance(v, str)}
