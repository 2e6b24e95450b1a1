"""The key endpoints (Server-Server API, "Retrieving server keys"): publishing this server's
keys, and answering as a notary for other servers' keys. No authentication: other servers
need these to check signatures before they can authenticate anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from trioserver.api.federation import KEY
from trioserver.api.http import JsonDict, Request, Route, route
from trioserver.errors import MatrixError
from trioserver.events.identifiers import is_valid_server_name
from trioserver.events.jsonutil import is_json_int

if TYPE_CHECKING:
    from trioserver.federation.keyring import KeyRing


class FederationKeysDeps(Protocol):
    """What these routes use of the federation part of `ApiDeps`."""

    @property
    def keyring(self) -> KeyRing:
        """Other servers' keys, and this server's (`KeyRing`)."""
        ...


class KeyRoutesDeps(Protocol):
    """What these routes use of `ApiDeps`."""

    @property
    def federation(self) -> FederationKeysDeps | None:
        """None when federation is disabled."""
        ...


def _keyring(deps: KeyRoutesDeps) -> KeyRing:
    if deps.federation is None:
        raise MatrixError("M_UNRECOGNIZED", "Federation is disabled", status=404)
    return deps.federation.keyring


async def get_server_keys(deps: KeyRoutesDeps, request: Request) -> JsonDict:
    """GET /_matrix/key/v2/server (and the deprecated ``/server/{keyId}``: every key, the
    same answer, as Synapse gives)."""
    return _keyring(deps).own_server_keys()


async def post_query(deps: KeyRoutesDeps, request: Request) -> JsonDict:
    """POST /_matrix/key/v2/query: keys of several servers, signed by this notary too."""
    keyring = _keyring(deps)
    server_keys = request.json().get("server_keys")
    if not isinstance(server_keys, dict):
        raise MatrixError("M_BAD_JSON", "server_keys must be an object")
    now_ms = keyring.now_ms()
    servers: dict[str, dict[str, int]] = {}
    for server_name, criteria in server_keys.items():
        _check_server_name(server_name)
        if not isinstance(criteria, dict):
            raise MatrixError("M_BAD_JSON", f"server_keys.{server_name} must be an object")
        servers[server_name] = {
            key_id: _min_valid_ts(criterion, f"server_keys.{server_name}.{key_id}", now_ms)
            for key_id, criterion in criteria.items()
        }
    return {"server_keys": await keyring.notary_query(servers)}


async def get_query(deps: KeyRoutesDeps, request: Request) -> JsonDict:
    """GET /_matrix/key/v2/query/{serverName}[/{keyId}]?minimum_valid_until_ts=..."""
    keyring = _keyring(deps)
    server_name = request.path_params["server"]
    _check_server_name(server_name)
    raw = request.query_param("minimum_valid_until_ts")
    min_ts = keyring.now_ms()
    if raw is not None:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
            raise MatrixError("M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")
        min_ts = int(raw)
    key_id = request.path_params.get("key")
    wanted = {key_id: min_ts} if key_id else {}
    return {
        "server_keys": await keyring.notary_query({server_name: wanted}, default_min_ts=min_ts)
    }


def _check_server_name(server_name: str) -> None:
    if not is_valid_server_name(server_name):
        raise MatrixError("M_INVALID_PARAM", f"Invalid server name: {server_name[:255]!r}")


def _min_valid_ts(criterion: Any, where: str, now_ms: int) -> int:
    # "If not supplied, the current time as determined by the notary server is used."
    if not isinstance(criterion, dict):
        raise MatrixError("M_BAD_JSON", f"{where} must be an object")
    value = criterion.get("minimum_valid_until_ts")
    if value is None:
        return now_ms
    if not is_json_int(value):
        raise MatrixError("M_INVALID_PARAM", f"{where}.minimum_valid_until_ts must be an integer")
    return int(value)


# Route[Any]: served with `ApiDeps`, which gives what `KeyRoutesDeps` names.
ROUTES: list[Route[Any]] = [
    route("GET", f"{KEY}/v2/server", get_server_keys, auth="none"),
    # The deprecated key id segment, also empty (a trailing slash).
    route("GET", f"{KEY}/v2/server/{{key:opt}}", get_server_keys, auth="none"),
    # A write only of the key cache (no replicated stream): any instance answers it.
    route("POST", f"{KEY}/v2/query", post_query, auth="none", local=True),
    route("GET", f"{KEY}/v2/query/{{server}}", get_query, auth="none"),
    route("GET", f"{KEY}/v2/query/{{server}}/{{key}}", get_query, auth="none"),
]
