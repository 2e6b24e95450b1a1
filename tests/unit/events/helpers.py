"""Test helpers: the spec's test signing key and a small in-memory room.

:class:`Room` builds real, signed events with :func:`build_event` and keeps a
state map, so auth-rule tests can describe a situation ("alice is invited, the
join rule is knock") and then check one new event against that state.  Setup
events are put into the state directly, without running the auth rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signedjson.key import decode_signing_key_base64, get_verify_key
from signedjson.sign import sign_json

from trioserver.events import (
    Event,
    RoomVersion,
    StateKey,
    add_hashes_and_signatures,
    auth_types_for_event,
    build_event,
    check_auth_rules,
    compute_reference_hash,
)
from trioserver.events.jsonutil import JsonDict, domain_of
from trioserver.events.redaction import prune_event_dict

# Appendices, "Cryptographic Test Vectors": the signing key seed, server name, key ID.
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SIGNING_KEY = decode_signing_key_base64("ed25519", "1", SPEC_SEED)
VERIFY_KEY = get_verify_key(SIGNING_KEY)

CREATOR = "@creator:hs.test"
MOD = "@mod:hs.test"
ALICE = "@alice:hs.test"
BOB = "@bob:other.test"
CAROL = "@carol:other.test"


def default_power_levels(room_version: RoomVersion, creator: str = CREATOR) -> JsonDict:
    """Power levels with a moderator at 50; the creator at 100 before v12."""
    users = {MOD: 50}
    if not room_version.privileged_creators:
        users[creator] = 100
    return {"users": users, "users_default": 0}


def cosign(event: Event, server_name: str) -> Event:
    """Return ``event`` with an extra signature by ``server_name`` (same test key)."""
    pdu = event.get_pdu_json()
    redacted = prune_event_dict(event.room_version, pdu)
    signed = sign_json(redacted, server_name, SIGNING_KEY)
    pdu["signatures"] = signed["signatures"]
    return Event.from_pdu(event.room_version, pdu)


def signed_raw_event(room_version: RoomVersion, pdu: JsonDict) -> Event:
    """Hash and sign a hand-written PDU (which may break the builder's rules)."""
    add_hashes_and_signatures(room_version, pdu, str(domain_of(pdu["sender"])), SIGNING_KEY)
    return Event.from_pdu(room_version, pdu)


class Room:
    """An in-memory room: a state map plus the DAG tip, for building test events."""

    def __init__(
        self,
        room_version: RoomVersion,
        *,
        creator: str = CREATOR,
        create_content: Mapping[str, Any] | None = None,
        creator_joins: bool = True,
        power_levels: Mapping[str, Any] | None = None,
        with_power_levels: bool = True,
        join_rule: str | None = "invite",
    ) -> None:
        self.version = room_version
        self.state: dict[StateKey, Event] = {}
        self.reference_hashes: dict[str, bytes] = {}
        self.tip: list[str] = []
        self.depth = 0
        # v12: the create event has no room_id; the room ID comes from its event ID.
        self.room_id: str | None = None
        if not room_version.room_id_from_create_event:
            self.room_id = f"!room:{domain_of(creator)}"
        content = dict(create_content or {"room_version": room_version.identifier})
        if not room_version.implicit_room_creator:
            content.setdefault("creator", creator)
        self.create = self.apply(self.event("m.room.create", creator, content, state_key=""))
        self.room_id = self.create.room_id
        if creator_joins:
            self.set_member(creator, "join")
            if with_power_levels:
                pl_content = power_levels or default_power_levels(room_version, creator)
                self.set_state("m.room.power_levels", "", pl_content, sender=creator)
            if join_rule is not None:
                self.set_state("m.room.join_rules", "", {"join_rule": join_rule}, sender=creator)

    def event(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        prev_event_ids: list[str] | None = None,
    ) -> Event:
        """Build (but do not apply) an event on top of the current state."""
        keys = auth_types_for_event(
            self.version, type=event_type, sender=sender, state_key=state_key, content=content
        )
        auth_ids = [self.state[key].event_id for key in keys if key in self.state]
        return build_event(
            self.version,
            type=event_type,
            sender=sender,
            content=content,
            state_key=state_key,
            room_id=self.room_id,
            prev_event_ids=self.tip if prev_event_ids is None else prev_event_ids,
            auth_event_ids=auth_ids,
            depth=self.depth + 1,
            origin_server_ts=1_700_000_000_000 + self.depth,
            redacts=redacts,
            server_name=str(domain_of(sender)),
            signing_key=SIGNING_KEY,
            reference_hashes=self.reference_hashes,
        )

    def apply(self, event: Event) -> Event:
        """Add an event to the DAG (and to the state if it is a state event)."""
        self.reference_hashes[event.event_id] = compute_reference_hash(
            self.version, event.get_pdu_json()
        )
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        self.tip = [event.event_id]
        self.depth += 1
        return event

    def set_state(
        self, event_type: str, state_key: str, content: Mapping[str, Any], *, sender: str = CREATOR
    ) -> Event:
        """Put a state event into the room without checking the auth rules."""
        return self.apply(self.event(event_type, sender, content, state_key=state_key))

    def set_member(self, user_id: str, membership: str, *, sender: str | None = None) -> Event:
        """Set a user's membership (sent by the user unless ``sender`` is given)."""
        return self.set_state(
            "m.room.member", user_id, {"membership": membership}, sender=sender or user_id
        )

    def set_power_levels(self, **changes: Any) -> Event:
        """Replace the power levels with the defaults updated by ``changes``."""
        content = default_power_levels(self.version)
        users = changes.pop("users", {})
        content["users"].update(users)
        content.update(changes)
        return self.set_state("m.room.power_levels", "", content)

    def check(self, event: Event) -> None:
        """Run the auth rules for ``event`` against the current state."""
        check_auth_rules(self.version, event, self.state)
