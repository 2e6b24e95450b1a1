"""Sending into rooms: messages, state and redactions."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional
from trioserver.handlers.guest_access import GUEST_ACCESS, kick_guests_if_forbidden

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def put_send(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /rooms/{roomId}/send/{eventType}/{txnId}."""
    params = request.path_params
    content = request.json()
    deps.ratelimits.message.check(request.requester.user_id)
    event_id = await deps.send.send_message(
        request.requester, params["room"], params["type"], content, params["txn"]
    )
    return {"event_id": event_id}


async def post_send(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/send/{eventType}: the pre-r0 form without a transaction id.

    Not in the current spec, but Synapse serves it and SyTest and older bots use it; each
    request gets a fresh transaction id, so it is not idempotent.
    """
    params = request.path_params
    content = request.json()
    deps.ratelimits.message.check(request.requester.user_id)
    txn_id = "post-" + secrets.token_urlsafe(12)
    event_id = await deps.send.send_message(
        request.requester, params["room"], params["type"], content, txn_id
    )
    return {"event_id": event_id}


async def put_state(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /rooms/{roomId}/state/{eventType}/{stateKey}."""
    params = request.path_params
    content = request.json()
    requester = request.requester
    room_id, event_type, state_key = params["room"], params["type"], params.get("key", "")
    if event_type == "m.room.member":
        # Membership sent as raw state goes through the membership rules (Synapse does too).
        membership = content.get("membership")
        if membership == "invite":
            deps.membership.check_invitee(state_key)
        extra = {k: v for k, v in content.items() if k not in ("membership", "reason")}
        event_id = await deps.membership.update_membership(
            requester.user_id,
            room_id,
            state_key,
            membership if isinstance(membership, str) else "",
            reason=optional(content, "reason", str),
            extra_content=extra,
            guest=requester.is_guest,
        )
    else:
        event_id = await deps.send.send_state(requester, room_id, event_type, state_key, content)
        if event_type == GUEST_ACCESS:
            await kick_guests_if_forbidden(
                deps.membership, deps.accounts, deps.state, deps.events, room_id
            )
    return {"event_id": event_id}


async def put_redact(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /rooms/{roomId}/redact/{eventId}/{txnId}."""
    params = request.path_params
    body = request.json_or_empty()
    deps.ratelimits.message.check(request.requester.user_id)
    event_id = await deps.send.redact(
        request.requester, params["room"], params["event"], body.get("reason"), params["txn"]
    )
    return {"event_id": event_id}


async def post_redact(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/redact/{eventId}: the form without a transaction id (Synapse
    serves it; SyTest's room-version tests use it); each request redacts anew."""
    params = request.path_params
    body = request.json_or_empty()
    deps.ratelimits.message.check(request.requester.user_id)
    txn_id = "post-" + secrets.token_urlsafe(12)
    event_id = await deps.send.redact(
        request.requester, params["room"], params["event"], body.get("reason"), txn_id
    )
    return {"event_id": event_id}


ROUTES: list[Route[ApiDeps]] = [
    route(
        "POST", f"{CLIENT}/rooms/{{room}}/send/{{type}}", post_send, auth="required", guest=True
    ),
    route(
        "PUT",
        f"{CLIENT}/rooms/{{room}}/send/{{type}}/{{txn}}",
        put_send,
        auth="required",
        guest=True,
    ),
    route(
        "PUT",
        f"{CLIENT}/rooms/{{room}}/state/{{type}}/{{key:opt}}",
        put_state,
        auth="required",
        guest=True,
    ),
    route(
        "PUT", f"{CLIENT}/rooms/{{room}}/state/{{type}}", put_state, auth="required", guest=True
    ),
    route("PUT", f"{CLIENT}/rooms/{{room}}/redact/{{event}}/{{txn}}", put_redact, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/redact/{{event}}", post_redact, auth="required"),
]
