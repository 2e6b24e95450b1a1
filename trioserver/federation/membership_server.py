"""Membership handshakes other servers start here (Server-Server API, "Joining Rooms",
"Leaving Rooms", "Knocking", "Inviting to a room"): ``make_join``/``send_join``,
``make_leave``/``send_leave``, ``make_knock``/``send_knock`` and ``invite`` (v2).

``make_*`` answers an unsigned event template built on the room's current head: its
``prev_events`` are the forward extremities, its ``auth_events`` chosen from the current state,
and it must pass the authorization rules as it stands (else 403). ``send_*`` takes the event
the remote server filled in and signed, checks it like any received PDU, and has the events
writer place it; a join is answered with the room's state before it and its auth chain.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    AuthError,
    Event,
    RoomVersion,
    auth_types_for_event,
    check_auth_rules,
    compute_event_signature,
    compute_reference_hash,
    get_server_name,
    is_valid_user_id,
)
from trioserver.events.builder import event_refs
from trioserver.federation.pdu_checks import PduRejected, PduSignatureError, check_pdu
from trioserver.handlers.sync_rooms import STRIPPED_STATE_TYPES, stripped
from trioserver.storage.live_room import load_room_head_txn
from trioserver.storage.received_events import ReceivedEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from signedjson.types import SigningKey

    from trioserver.federation.event_server import EventServer
    from trioserver.federation.inbound import InboundTransactions
    from trioserver.federation.pdu_checks import EventVerifier
    from trioserver.storage.persistence import EventPersister
    from trioserver.stores.database import Database
    from trioserver.stores.events import EventStore

MEMBER = "m.room.member"
CREATE_KEY = ("m.room.create", "")
# A template names at most this many prev_events (Synapse's limit).
MAX_PREV_EVENTS = 10


class MembershipServer:
    """The resident server's side of membership handshakes (module docstring)."""

    def __init__(
        self,
        *,
        server_name: str,
        signing_key: SigningKey,
        db: Database,
        events: EventStore,
        persister: EventPersister,
        verifier: EventVerifier,
        event_server: EventServer,
        inbound: InboundTransactions,
    ) -> None:
        self._server_name = server_name
        self._server_suffix = ":" + server_name
        self._signing_key = signing_key
        self._db = db
        self._events = events
        self._persister = persister
        self._verifier = verifier
        self._event_server = event_server
        self._inbound = inbound
        # ``relay(event_id, origin)``: the sender passes a handshake's event on to the room's
        # other servers (set when this instance runs the federation sender).
        self.relay: Callable[[str, str], None] | None = None

    async def make_membership(
        self,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        supported_versions: Sequence[str],
    ) -> dict[str, Any]:
        """``GET /make_{join,leave,knock}/{roomId}/{userId}``: an event template."""
        if not is_valid_user_id(user_id, historical=True) or get_server_name(user_id) != origin:
            raise MatrixError("M_FORBIDDEN", "The user is not of the requesting server")
        head = await self._db.run_read("fed_room_head", load_room_head_txn, room_id)
        if head is None or not head.state_ids:
            raise MatrixError("M_NOT_FOUND", "This server is not in the room")
        version = KNOWN_ROOM_VERSIONS[head.room_version]
        if membership != "leave" and version.identifier not in supported_versions:
            raise MatrixError(
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"Your homeserver does not support the features required to join this room"
                f" (room version {version.identifier})",
                extra={"room_version": version.identifier},
            )
        await self._inbound.check_acl(room_id, origin)
        if membership == "knock" and not version.knock_join_rule:
            raise MatrixError("M_FORBIDDEN", "This room version does not allow knocking")
        content = {"membership": membership}
        keys = auth_types_for_event(
            version, type=MEMBER, sender=user_id, state_key=user_id, content=content
        )
        auth_ids = [head.state_ids[k] for k in keys if k in head.state_ids]
        prev_ids = sorted(head.extremity_ids)[:MAX_PREV_EVENTS]
        found = await self._events.get_events([*auth_ids, *prev_ids, head.state_ids[CREATE_KEY]])
        refs = None
        if version.event_id_in_pdu:
            refs = {
                e: compute_reference_hash(version, s.event.get_pdu_json())
                for e, s in found.items()
            }
        depth = max((found[p].event.depth for p in prev_ids if p in found), default=0) + 1
        template: dict[str, Any] = {
            "room_id": room_id,
            "type": MEMBER,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "depth": depth,
            "origin": self._server_name,
            "origin_server_ts": int(time.time() * 1000),
            "prev_events": event_refs(version, prev_ids, refs),
            "auth_events": event_refs(version, auth_ids, refs),
        }
        auth_state = {
            k: found[head.state_ids[k]].event
            for k in [*keys, CREATE_KEY]
            if k in head.state_ids and head.state_ids[k] in found
        }
        probe = Event(room_version=version, event_id="$template", pdu=template)
        try:
            check_auth_rules(version, probe, auth_state)
        except AuthError as err:
            raise MatrixError(
                "M_FORBIDDEN", f"You are not allowed to {membership}: {err.reason}"
            ) from None
        return {"event": template, "room_version": version.identifier}

    async def send_membership(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> tuple[Event, RoomVersion]:
        """``PUT /send_{join,leave,knock}/{roomId}/{eventId}`` (v2): place the event."""
        version = await self._inbound.room_version_of(room_id)
        if version is None:
            raise MatrixError("M_NOT_FOUND", "This server is not in the room")
        await self._inbound.check_acl(room_id, origin)
        if isinstance(pdu, dict) and membership == "join":
            pdu = self._countersign_restricted(version, pdu)
        event = await _checked_handshake_pdu(version, pdu, self._verifier)
        if event.room_id != room_id or event.event_id != event_id:
            raise MatrixError("M_BAD_JSON", "The event does not match the request's path")
        if event.type != MEMBER or event.membership != membership:
            raise MatrixError("M_BAD_JSON", f"Not a {membership} event")
        if event.state_key != event.sender or get_server_name(event.sender) != origin:
            raise MatrixError(
                "M_FORBIDDEN", f"Not allowed to {membership} on behalf of another server's user"
            )
        if self.relay is not None:
            self.relay(event.event_id, origin)
        stored = await self._inbound.room_locks.run(room_id, self._place, room_id, version, event)
        if stored.rejected is not None:
            raise MatrixError("M_FORBIDDEN", f"The {membership} is not allowed: {stored.rejected}")
        return event, version

    async def _place(self, room_id: str, version: RoomVersion, event: Event) -> Any:
        existing = await self._events.get_event(event.event_id)
        if existing is not None:
            return existing
        stored = await self._persister.submit_received(room_id, version, [ReceivedEvent(event)])
        return next(s for s in stored if s.event_id == event.event_id)

    def _countersign_restricted(self, version: RoomVersion, pdu: dict[str, Any]) -> dict[str, Any]:
        # Restricted rooms: a join vouched for by one of our users carries our signature too.
        content = pdu.get("content")
        via = (
            content.get("join_authorised_via_users_server") if isinstance(content, dict) else None
        )
        if not isinstance(via, str) or not via.endswith(self._server_suffix):
            return pdu
        signatures = compute_event_signature(version, pdu, self._server_name, self._signing_key)
        return {**pdu, "signatures": signatures}

    async def join_answer(self, event: Event) -> dict[str, Any]:
        """The ``send_join`` answer: the state before the join and its auth chain."""
        stored = await self._events.get_event(event.event_id)
        assert stored is not None
        state_ids = list((await self._event_server.state_before(stored)).values())
        found = await self._events.get_events(state_ids)
        chain = await self._event_server.auth_chain([*state_ids, event.event_id])
        servers = sorted(
            {
                get_server_name(s.event.state_key)
                for s in found.values()
                if s.event.type == MEMBER and s.event.membership == "join" and s.event.state_key
            }
            | {self._server_name}
        )
        return {
            "origin": self._server_name,
            "event": event.get_pdu_json(),
            "state": [found[e].event.get_pdu_json() for e in state_ids if e in found],
            "auth_chain": [s.event.get_pdu_json() for s in chain],
            "members_omitted": False,
            "servers_in_room": servers,
        }

    async def knock_answer(self, event: Event) -> dict[str, Any]:
        """The ``send_knock`` answer: the stripped state a knocker sees."""
        stored = await self._events.get_event(event.event_id)
        assert stored is not None
        state = await self._event_server.state_before(stored)
        wanted = [e for k, e in state.items() if k[0] in STRIPPED_STATE_TYPES]
        found = await self._events.get_events(wanted)
        return {"knock_room_state": [stripped(found[e].event) for e in wanted if e in found]}

    async def on_invite(
        self, origin: str, room_id: str, event_id: str, body: Any
    ) -> dict[str, Any]:
        """``PUT /v2/invite/{roomId}/{eventId}``: a remote server invites a local user.

        The invite is countersigned and stored as an out-of-band membership: the invitee sees
        it in /sync with the ``invite_room_state`` the inviting server sent.
        """
        if not isinstance(body, dict):
            raise MatrixError("M_BAD_JSON", "Body must be an object")
        version = KNOWN_ROOM_VERSIONS.get(body.get("room_version", "1"))
        if version is None:
            raise MatrixError(
                "M_INCOMPATIBLE_ROOM_VERSION",
                "This server does not support the room's version",
                extra={"room_version": str(body.get("room_version"))},
            )
        event = await _checked_handshake_pdu(version, body.get("event"), self._verifier)
        target = event.state_key
        if (
            event.room_id != room_id
            or event.event_id != event_id
            or event.type != MEMBER
            or event.membership != "invite"
            or target is None
            or not target.endswith(self._server_suffix)
            or get_server_name(event.sender) != origin
        ):
            raise MatrixError("M_BAD_JSON", f"Not an invite of {origin} for a user of this server")
        if await self._inbound.room_version_of(room_id) is not None:
            await self._inbound.check_acl(room_id, origin)
        room_state = body.get("invite_room_state")
        stripped_state = (
            [s for s in room_state if isinstance(s, dict)] if isinstance(room_state, list) else []
        )
        signatures = compute_event_signature(
            version, event.get_pdu_json(), self._server_name, self._signing_key
        )
        signed = Event(
            room_version=version,
            event_id=event.event_id,
            pdu={**event.get_pdu_json(), "signatures": signatures},
            unsigned={"invite_room_state": stripped_state[:50]},
        )
        await self._inbound.room_locks.run(
            room_id, self._store_out_of_band, room_id, version, signed
        )
        return {"event": signed.get_pdu_json()}

    async def _store_out_of_band(self, room_id: str, version: RoomVersion, event: Event) -> None:
        if await self._events.get_event(event.event_id) is None:
            await self._persister.submit_received(
                room_id, version, [ReceivedEvent(event, out_of_band=True)]
            )


async def _checked_handshake_pdu(version: RoomVersion, pdu: Any, verifier: EventVerifier) -> Event:
    """A handshake's event, checked like a received PDU: 403 for a missing or bad signature,
    400 for a malformed event."""
    try:
        return await check_pdu(version, pdu, verifier)
    except PduSignatureError as err:
        raise MatrixError("M_FORBIDDEN", str(err)) from None
    except PduRejected as err:
        raise MatrixError("M_BAD_JSON", str(err)) from None
