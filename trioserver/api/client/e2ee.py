"""Client-server API routes: send-to-device messaging and end-to-end encryption keys.

Spec sections "Send-to-Device messaging" and "End-to-End Encryption" (key management API,
cross-signing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.api.client.account import require_password_uia
from trioserver.api.http import CLIENT, CLIENT_V3, JsonDict, Request, Route, route
from trioserver.api.params import require
from trioserver.errors import MatrixError
from trioserver.streams import STREAM_NAMES, StreamToken

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


def _object_of_objects(value: Any, name: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise MatrixError("M_INVALID_PARAM", f"'{name}' must map user ids to objects")
    return value


async def put_send_to_device(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /sendToDevice/{eventType}/{txnId}."""
    messages = _object_of_objects(require(request.json(), "messages", dict), "messages")
    for by_device in messages.values():
        if not all(isinstance(content, dict) for content in by_device.values()):
            raise MatrixError("M_INVALID_PARAM", "Each message must be a JSON object")
    await deps.to_device.send(
        request.requester,
        request.path_params["event_type"],
        request.path_params["txn_id"],
        messages,
    )
    return {}


async def post_keys_upload(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /keys/upload."""
    return await deps.e2e_keys.upload_keys(request.requester, request.json())


async def post_keys_query(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /keys/query."""
    query = require(request.json(), "device_keys", dict)
    for device_ids in query.values():
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise MatrixError("M_INVALID_PARAM", "'device_keys' values must be arrays of strings")
    return await deps.e2e_keys.query_keys(request.requester, query)


async def post_keys_claim(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /keys/claim."""
    claims = _object_of_objects(require(request.json(), "one_time_keys", dict), "one_time_keys")
    for by_device in claims.values():
        if not all(isinstance(algorithm, str) for algorithm in by_device.values()):
            raise MatrixError("M_INVALID_PARAM", "Algorithms must be strings")
    return await deps.e2e_keys.claim_keys(claims)


def _token_param(request: Request, name: str) -> StreamToken | None:
    raw = request.query_param(name)
    if raw is None:
        return None
    try:
        return StreamToken.parse(raw)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", f"Invalid '{name}' token") from None


async def get_keys_changes(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /keys/changes?from=&to= (sync tokens; ``to`` defaults to now, as in Synapse)."""
    since = _token_param(request, "from")
    if since is None:
        raise MatrixError("M_MISSING_PARAM", "Missing 'from' parameter")
    now = deps.notifier.current_token()
    upto = _token_param(request, "to") or now
    # A `to` from the future (e.g. another server's token) means "now".
    upto = StreamToken(
        **{name: min(getattr(upto, name), getattr(now, name)) for name in STREAM_NAMES}
    )
    changes = await deps.e2e_keys.device_list_changes(request.requester.user_id, since, upto)
    return {"changed": sorted(changes.changed), "left": sorted(changes.left)}


async def post_device_signing_upload(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /keys/device_signing/upload (UIA unless setting up or repeating an upload)."""
    body = deps.uia.with_stored_params(request.json())
    user_id = request.requester.user_id
    state = await deps.e2e_keys.cross_signing.upload_state(user_id, body)
    if state == "unchanged":
        return {}
    if state == "replace":
        await require_password_uia(deps, request, body)
    await deps.e2e_keys.cross_signing.upload_keys(user_id, body)
    return {}


async def post_signatures_upload(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /keys/signatures/upload."""
    body = request.json()
    return await deps.e2e_keys.cross_signing.upload_signatures(request.requester.user_id, body)


ROUTES: list[Route[ApiDeps]] = [
    route(
        "PUT",
        f"{CLIENT}/sendToDevice/{{event_type}}/{{txn_id}}",
        put_send_to_device,
        auth="required",
        guest=True,
    ),
    route("POST", f"{CLIENT}/keys/upload", post_keys_upload, auth="required", guest=True),
    route(
        "POST", f"{CLIENT}/keys/query", post_keys_query, auth="required", guest=True, local=True
    ),
    route(
        "POST", f"{CLIENT}/keys/claim", post_keys_claim, auth="required", guest=True, local=True
    ),
    route("GET", f"{CLIENT}/keys/changes", get_keys_changes, auth="required", guest=True),
    route(
        "POST",
        f"{CLIENT_V3}/keys/device_signing/upload",
        post_device_signing_upload,
        auth="required",
    ),
    route("POST", f"{CLIENT}/keys/signatures/upload", post_signatures_upload, auth="required"),
]
