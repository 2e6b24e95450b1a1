"""Local users' memberships in rooms this server is not in: joining, knocking and leaving
through a server that is (Server-Server API, "Joining Rooms", "Knocking", "Leaving Rooms"),
inviting users of other servers, and the directory and profile queries behind them.

A join asks the candidate servers in turn for a ``make_join`` template, fills it in, signs
it, and sends it with ``send_join``; the answer's state and auth chain pass the same checks as
any received PDU, are stored as outliers, and the join is placed on that state by the events
writer (`storage.received_events`). A leave (rejecting a remote invite) works the same way
and is stored as an out-of-band membership, as the invite was.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    Event,
    InvalidEventError,
    RoomVersion,
    add_hashes_and_signatures,
    check_canonical_json_values,
    compute_reference_hash,
    generate_v1_event_id,
    get_server_name,
)
from trioserver.events.builder import event_refs
from trioserver.federation.gaps import sort_by_auth
from trioserver.federation.pdu_checks import PduRejected, check_pdu
from trioserver.federation.queries import query_alias
from trioserver.storage.received_events import ReceivedEvent

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from signedjson.types import SigningKey

    from trioserver.federation.inbound import InboundTransactions
    from trioserver.federation.pdu_checks import EventVerifier
    from trioserver.storage.persistence import EventPersister
    from trioserver.stores.events import StoredEvent

logger = logging.getLogger(__name__)

FED = "/_matrix/federation"
MEMBER = "m.room.member"


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _remote_failure(action: str, errors: list[str]) -> MatrixError:
    detail = "; ".join(errors[-3:]) if errors else "no server answered"
    return MatrixError("M_UNKNOWN", f"Failed to {action} over federation: {detail}", status=502)


def _passed_through(err: Exception) -> MatrixError | None:
    status = getattr(err, "status", None)
    errcode = getattr(err, "errcode", None)
    if isinstance(status, int) and 400 <= status < 500 and isinstance(errcode, str):
        message = getattr(err, "message", None) or str(err)
        body = getattr(err, "body", None)
        extra = {}
        if isinstance(body, dict):
            # The remote's other fields too (room_version of M_INCOMPATIBLE_ROOM_VERSION).
            extra = {k: v for k, v in body.items() if k not in ("errcode", "error")}
        return MatrixError(errcode, f"{message}", status=status, extra=extra)
    return None


def _forbidden_from(err: Exception) -> MatrixError | None:
    # A remote refusal (403, an incompatible version) is the user's answer, said as such.
    status = getattr(err, "status", None)
    errcode = getattr(err, "errcode", None)
    if status == 403 or errcode == "M_FORBIDDEN":
        return MatrixError("M_FORBIDDEN", f"The remote server refused: {err}")
    return None


class RemoteMembership:
    """Memberships of local users negotiated with other servers (module docstring)."""

    def __init__(
        self,
        *,
        server_name: str,
        signing_key: SigningKey,
        client: Any,
        persister: EventPersister,
        verifier: EventVerifier,
        inbound: InboundTransactions,
    ) -> None:
        self._server_name = server_name
        self._signing_key = signing_key
        self._client = client
        self._persister = persister
        self._verifier = verifier
        self._inbound = inbound

    def _candidates(self, room_id: str, servers: Iterable[str]) -> list[str]:
        ordered: list[str] = []
        for server in [*servers, _room_server(room_id)]:
            if server and server != self._server_name and server not in ordered:
                ordered.append(server)
        return ordered

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> str:
        """Join a room through the first candidate server that lets the user in.

        Raises:
            MatrixError: 404 with no candidate, 403 when refused, 502 when none answered.
        """
        return await self._handshake(user_id, room_id, servers, content, "join")

    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> str:
        """Knock on a room through a server that is in it."""
        return await self._handshake(user_id, room_id, servers, content, "knock")

    async def leave(
        self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> str:
        """Leave (reject an invite to, withdraw a knock on) a room this server is not in."""
        return await self._handshake(user_id, room_id, servers, content, "leave")

    async def leave_locally(self, user_id: str, invite: Event, content: dict[str, Any]) -> str:
        """Reject an invite without the inviting server (it refused or cannot be reached):
        an out-of-band leave, signed here and stored here only, so the user is rid of the
        invite (Synapse does the same)."""
        version = invite.room_version
        pdu: dict[str, Any] = {
            "room_id": invite.room_id,
            "type": MEMBER,
            "sender": user_id,
            "state_key": user_id,
            "content": {**content, "membership": "leave"},
            "depth": invite.depth + 1,
            "origin": self._server_name,
            "origin_server_ts": int(time.time() * 1000),
            "prev_events": event_refs_of(version, [invite]),
            "auth_events": event_refs_of(version, [invite]),
        }
        if version.event_id_in_pdu:
            pdu["event_id"] = generate_v1_event_id(self._server_name)
        add_hashes_and_signatures(version, pdu, self._server_name, self._signing_key)
        event = Event.from_pdu(version, pdu)
        await self._inbound.room_locks.run(
            invite.room_id,
            self._persister.submit_received,
            invite.room_id,
            version,
            [ReceivedEvent(event, out_of_band=True)],
        )
        return event.event_id

    async def _handshake(
        self,
        user_id: str,
        room_id: str,
        servers: Sequence[str],
        content: dict[str, Any],
        membership: str,
    ) -> str:
        candidates = self._candidates(room_id, servers)
        if not candidates:
            raise MatrixError("M_NOT_FOUND", "No known servers")
        errors: list[str] = []
        answered: MatrixError | None = None
        for server in candidates:
            try:
                return await self._handshake_with(server, user_id, room_id, content, membership)
            except MatrixError:
                raise
            except Exception as err:  # that server failed: try the next one
                refusal = _forbidden_from(err)
                if refusal is not None:
                    raise refusal from None
                logger.info("%s of %s via %s failed: %s", membership, room_id, server, err)
                errors.append(f"{server}: {err}")
                answered = _passed_through(err) or answered
        # A server that answered with a Matrix error says why better than "failed" (Synapse
        # passes the remote's 4xx through to the client).
        raise answered if answered is not None else _remote_failure(membership, errors)

    async def _handshake_with(
        self, server: str, user_id: str, room_id: str, content: dict[str, Any], membership: str
    ) -> str:
        path = f"{FED}/v1/make_{membership}/{_q(room_id)}/{_q(user_id)}"
        query = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership != "leave" else None
        answer = await self._client.get_json(server, path, query=query)
        if not isinstance(answer, dict) or not isinstance(answer.get("event"), dict):
            raise PduRejected(f"make_{membership} answer has no event")
        version = KNOWN_ROOM_VERSIONS.get(str(answer.get("room_version", "1")))
        if version is None:
            raise PduRejected(f"unsupported room version {answer.get('room_version')!r}")
        event = self._fill_template(version, answer["event"], user_id, room_id, content)
        reply = await self._send_membership(server, membership, event)
        if membership == "join":
            return await self._store_join(version, event, reply)
        await self._inbound.room_locks.run(
            room_id,
            self._persister.submit_received,
            room_id,
            version,
            [ReceivedEvent(event, out_of_band=True)],
        )
        return event.event_id

    async def _send_membership(self, server: str, membership: str, event: Event) -> Any:
        # send_knock has only a v1 (answered without the v1 [200, body] wrapping); joins and
        # leaves use v2, and v1 where the server has no v2 (it answers [200, body]).
        tail = f"send_{membership}/{_q(event.room_id)}/{_q(event.event_id)}"
        if membership == "knock":
            return await self._client.put_json(server, f"{FED}/v1/{tail}", event.get_pdu_json())
        try:
            return await self._client.put_json(server, f"{FED}/v2/{tail}", event.get_pdu_json())
        except Exception as err:
            if not _unrecognized(err):
                raise
        reply = await self._client.put_json(server, f"{FED}/v1/{tail}", event.get_pdu_json())
        return _v1_body(reply)

    def _fill_template(
        self,
        version: RoomVersion,
        template: dict[str, Any],
        user_id: str,
        room_id: str,
        content: dict[str, Any],
    ) -> Event:
        if (
            template.get("room_id") != room_id
            or template.get("type") != MEMBER
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
        ):
            raise PduRejected("the template is not for this membership")
        base = template.get("content")
        merged = {**(base if isinstance(base, dict) else {}), **content}
        pdu: dict[str, Any] = {
            k: v
            for k, v in template.items()
            if k not in ("event_id", "signatures", "hashes", "unsigned")
        }
        pdu["content"] = merged
        pdu["origin"] = self._server_name
        pdu["origin_server_ts"] = int(time.time() * 1000)
        if version.event_id_in_pdu:
            pdu["event_id"] = generate_v1_event_id(self._server_name)
        add_hashes_and_signatures(version, pdu, self._server_name, self._signing_key)
        try:
            return Event.from_pdu(version, pdu)
        except InvalidEventError as err:
            raise PduRejected(f"the template makes an invalid event: {err}") from None

    async def _store_join(self, version: RoomVersion, event: Event, reply: Any) -> str:
        if not isinstance(reply, dict):
            raise PduRejected("send_join answer is not an object")
        signed = reply.get("event")
        if isinstance(signed, dict) and signed.get("event_id", event.event_id) == event.event_id:
            # A restricted join comes back countersigned by the resident server.
            with contextlib.suppress(PduRejected):
                event = await check_pdu(version, signed, self._verifier)
        room_id = event.room_id
        state = await self._checked(version, room_id, reply.get("state"))
        chain = await self._checked(version, room_id, reply.get("auth_chain"))
        state_map = {(e.type, e.state_key): e.event_id for e in state if e.state_key is not None}
        if ("m.room.create", "") not in state_map:
            raise PduRejected("the send_join state has no create event")
        ordered = sort_by_auth([*chain, *state])
        received = [ReceivedEvent(e, outlier=True) for e in ordered]
        received.append(ReceivedEvent(event, state_before=state_map))
        stored: list[StoredEvent] = await self._inbound.room_locks.run(
            room_id, self._persister.submit_received, room_id, version, received
        )
        mine = next((s for s in stored if s.event_id == event.event_id), None)
        if mine is not None and mine.rejected is not None:
            raise MatrixError("M_FORBIDDEN", f"The join is not allowed: {mine.rejected}")
        return event.event_id

    async def _checked(self, version: RoomVersion, room_id: str, pdus: Any) -> list[Event]:
        if not isinstance(pdus, list):
            return []
        checked: list[Event] = []
        for pdu in pdus:
            try:
                event = await check_pdu(version, pdu, self._verifier)
            except PduRejected as err:
                logger.info("dropping a PDU of a join answer: %s", err)
                continue
            if event.room_id == room_id:
                checked.append(event)
        return checked

    async def invite(self, event: Event, invite_room_state: list[dict[str, Any]]) -> str:
        """Invite a user of another server: their server countersigns the invite
        (``PUT /v2/invite``, or v1), then it is stored here. Nothing is stored when the
        invitee's server refuses, cannot be reached, or answers with a bad event.

        Raises:
            MatrixError: the remote's refusal (its 4xx passed through), 400 ``M_BAD_JSON``
                for an answer that is not this invite, 502 when it cannot be reached.
        """
        target = event.state_key
        assert target is not None
        try:
            answer = await self._send_invite(event, invite_room_state)
        except MatrixError:
            raise
        except Exception as err:
            refusal = _passed_through(err)
            if refusal is not None:
                raise refusal from None
            raise _remote_failure("invite", [f"{get_server_name(target)}: {err}"]) from None
        signed = answer.get("event") if isinstance(answer, dict) else None
        version = event.room_version
        try:
            if not isinstance(signed, dict):
                raise PduRejected("the answer has no event")
            check_canonical_json_values(signed)
            countersigned = await check_pdu(version, signed, self._verifier)
        except (PduRejected, InvalidEventError) as err:
            raise MatrixError(
                "M_BAD_JSON", f"The invitee's server sent a bad event: {err}"
            ) from None
        if countersigned.event_id != event.event_id:
            raise MatrixError("M_BAD_JSON", "The invitee's server sent another event")
        stored: list[StoredEvent] = await self._inbound.room_locks.run(
            event.room_id,
            self._persister.submit_received,
            event.room_id,
            version,
            [ReceivedEvent(countersigned)],
        )
        mine = next((s for s in stored if s.event_id == event.event_id), None)
        if mine is not None and mine.rejected is not None:
            raise MatrixError("M_FORBIDDEN", f"The invite is not allowed: {mine.rejected}")
        return event.event_id

    async def _send_invite(self, event: Event, invite_room_state: list[dict[str, Any]]) -> Any:
        target = event.state_key
        assert target is not None
        body = {
            "room_version": event.room_version.identifier,
            "event": event.get_pdu_json(),
            "invite_room_state": invite_room_state,
        }
        tail = f"invite/{_q(event.room_id)}/{_q(event.event_id)}"
        destination = get_server_name(target)
        try:
            return await self._client.put_json(destination, f"{FED}/v2/{tail}", body)
        except Exception as err:
            if not _unrecognized(err):
                raise
        # A server without the v2 API: the event alone, the stripped state in its unsigned.
        pdu = {**event.get_pdu_json(), "unsigned": {"invite_room_state": invite_room_state}}
        return _v1_body(await self._client.put_json(destination, f"{FED}/v1/{tail}", pdu))

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """Resolve an alias of another server (`federation.queries.query_alias`)."""
        return await query_alias(self._client, alias)


def _room_server(room_id: str) -> str | None:
    # Before room version 12 a room id names the server that created it; a candidate.
    if ":" not in room_id:
        return None
    return room_id.split(":", 1)[1] or None


def _unrecognized(err: Exception) -> bool:
    """Whether a remote answered that it has no such endpoint (try the older API)."""
    status = getattr(err, "status", None)
    return status in (400, 404, 405) and getattr(err, "errcode", None) in (
        None,
        "M_UNRECOGNIZED",
        "M_NOT_FOUND",
    )


def _v1_body(reply: Any) -> Any:
    # The v1 membership APIs answer [200, body].
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == 200:
        return reply[1]
    return reply


def event_refs_of(version: RoomVersion, events: list[Event]) -> list[Any]:
    """``prev_events``/``auth_events`` naming `events`, in the room version's format."""
    hashes = None
    if version.event_id_in_pdu:
        hashes = {e.event_id: compute_reference_hash(version, e.get_pdu_json()) for e in events}
    return event_refs(version, [e.event_id for e in events], hashes)
