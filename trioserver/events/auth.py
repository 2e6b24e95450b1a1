"""The authorisation rules of every room version.

Theory of operation:
    "Checks performed on receipt of a PDU" runs the authorisation rules
    against three different sets of state: the event's own ``auth_events``,
    the state before the event, and the current state.  The rules split
    accordingly:

    * :func:`check_auth_events` - the rules about the ``auth_events`` *list*
      (v1 rule 2 / v12 rule 3): no duplicates, only entries the "auth events
      selection" algorithm (:func:`auth_types_for_event`) allows, none
      rejected, all in the same room, and the create event present (v1-11)
      or absent (v12).  It returns the list as a state map.
    * :func:`check_auth_rules` - every other rule, evaluated against a state
      map (the map returned above, or the state before the event, or the
      current state).  The map must contain the room's create event; in v12
      the caller adds it, since it is never listed in ``auth_events``.

    Rules that need I/O are split out: signatures (including "validly signed
    by the homeserver of join_authorised_via_users_server") are verified by
    the caller using :func:`~trioserver.events.signing.required_signature_servers`;
    "rejected" is known only to the caller and passed in as IDs.

    Membership rules live in :mod:`auth_membership`, power level rules in
    :mod:`auth_power_levels`, and the redaction policy applied outside the
    auth rules in :mod:`auth_redaction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Any

from trioserver.events import constants as c
from trioserver.events.auth_membership import check_membership, membership_of
from trioserver.events.auth_power_levels import check_power_levels
from trioserver.events.constants import Membership
from trioserver.events.errors import AuthError
from trioserver.events.hashing import room_id_from_create_event_id
from trioserver.events.identifiers import is_valid_user_id
from trioserver.events.jsonutil import StateKey, domain_of
from trioserver.events.model import Event
from trioserver.events.power_levels import get_named_level, get_send_level, get_user_power_level
from trioserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

AuthEvents = Mapping[StateKey, Event]


def auth_types_for_event(
    room_version: RoomVersion,
    *,
    type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> list[StateKey]:
    """The state keys whose current events form an event's ``auth_events``.

    Server-server API, "Auth events selection": the create event (not in
    v12), the power levels, the sender's membership, and for member events
    the target's membership, the join rules (join/invite/knock), the
    ``m.room.third_party_invite`` named by ``signed.token`` (third-party
    invites) and the membership of ``join_authorised_via_users_server``
    (restricted joins, v8+).  Each is included only "if any" exists.

    Args:
        room_version: The room's version.
        type: The event type.
        sender: The sender.
        state_key: The state key, or ``None`` for a non-state event.
        content: The event content.

    Returns:
        Distinct ``(type, state_key)`` pairs; empty for the create event.
    """
    if type == c.CREATE and state_key == "":
        return []
    keys: list[StateKey] = []
    if room_version.create_event_in_auth_events:
        keys.append(c.CREATE_KEY)
    keys += [c.POWER_LEVELS_KEY, (c.MEMBER, sender)]
    if type == c.MEMBER and state_key is not None:
        keys += _member_auth_types(room_version, state_key, content)
    return list(dict.fromkeys(keys))  # de-duplicate, keeping order


def _member_auth_types(
    room_version: RoomVersion, state_key: str, content: Mapping[str, Any]
) -> list[StateKey]:
    membership = content.get("membership")
    keys: list[StateKey] = [(c.MEMBER, state_key)]
    if membership in (Membership.JOIN, Membership.INVITE, Membership.KNOCK):
        keys.append(c.JOIN_RULES_KEY)
    invite = content.get("third_party_invite")
    if membership == Membership.INVITE and isinstance(invite, Mapping):
        signed = invite.get("signed")
        token = signed.get("token") if isinstance(signed, Mapping) else None
        if isinstance(token, str):
            keys.append((c.THIRD_PARTY_INVITE, token))
    authoriser = content.get(c.AUTHORISING_USER)
    if (
        membership == Membership.JOIN
        and room_version.restricted_join_rule
        and isinstance(authoriser, str)
    ):
        keys.append((c.MEMBER, authoriser))
    return keys


def check_auth_events(
    room_version: RoomVersion,
    event: Event,
    auth_events: Iterable[Event],
    *,
    rejected_event_ids: Set[str] = frozenset(),
    ignore_unselected: bool = False,
) -> dict[StateKey, Event]:
    """Check the rules about an event's ``auth_events`` list and index it.

    `ignore_unselected`: an entry of a type the selection algorithm does not pick is left
    out instead of rejecting the event (Synapse's behaviour for events from other servers,
    which SyTest's federation tests rely on); every other rule still holds.

    Args:
        room_version: The room's version.
        event: The event being authorised.
        auth_events: The events named in ``event.auth_event_ids`` (extra
            events are ignored).
        rejected_event_ids: IDs of events this server has rejected.

    Returns:
        The auth events keyed by ``(type, state_key)``.  For v12 the caller
        must add the create event before calling :func:`check_auth_rules`.

    Raises:
        AuthError: If a rule is violated.
        ValueError: If an auth event is missing from ``auth_events``.
    """
    if event.is_create_event():
        return {}  # rule 1 decides create events before the auth events are considered
    by_id = {auth_event.event_id: auth_event for auth_event in auth_events}
    allowed = frozenset(
        auth_types_for_event(
            room_version,
            type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
    )
    state: dict[StateKey, Event] = {}
    for event_id in event.auth_event_ids:
        if event_id not in by_id:
            raise ValueError(f"auth event {event_id} was not supplied")
        auth_event = by_id[event_id]
        if (
            ignore_unselected
            and auth_event.state_key is not None
            and (auth_event.type, auth_event.state_key) not in allowed
        ):
            continue
        key = _check_auth_event(event, auth_event, allowed, rejected_event_ids)
        if key in state:
            raise AuthError(f"duplicate auth events for {key}")
        state[key] = by_id[event_id]
    if room_version.create_event_in_auth_events and c.CREATE_KEY not in state:
        raise AuthError("no m.room.create event in auth_events")
    return state


def _check_auth_event(
    event: Event, auth_event: Event, allowed: Set[StateKey], rejected_event_ids: Set[str]
) -> StateKey:
    """Check one entry of ``auth_events``; return its state key."""
    event_id = auth_event.event_id
    if auth_event.state_key is None:
        raise AuthError(f"auth event {event_id} is not a state event")
    key = (auth_event.type, auth_event.state_key)
    if key not in allowed:
        raise AuthError(f"auth event {event_id} for {key} is not selected for this event")
    if event_id in rejected_event_ids:
        raise AuthError(f"auth event {event_id} was rejected")
    if auth_event.room_id != event.room_id:
        raise AuthError(f"auth event {event_id} belongs to another room")
    return key


def check_auth_rules(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    """Apply the authorisation rules to an event, given a set of room state.

    Args:
        room_version: The room's version.
        event: The event being authorised.
        auth_events: State map to check against; must include the room's
            ``m.room.create`` event (also in v12) and whichever of the other
            selected state events exist.

    Raises:
        AuthError: If the event is rejected; ``reason`` names the rule.
    """
    if event.type == c.CREATE:
        check_create(room_version, event)
        return
    create = auth_events.get(c.CREATE_KEY)
    if create is None:
        raise AuthError("no m.room.create event in the auth state")
    # v12 rule 2: the room ID must be the create event's ID with "!".
    if room_version.room_id_from_create_event and event.room_id != room_id_from_create_event_id(
        create.event_id
    ):
        raise AuthError("room_id does not match the m.room.create event")
    _check_federation_allowed(event, create)
    if room_version.special_case_aliases_auth and event.type == c.ALIASES:
        _check_aliases(event)
        return
    if event.type == c.MEMBER:
        check_membership(room_version, event, auth_events)
        return
    if membership_of(auth_events, event.sender) != Membership.JOIN:
        raise AuthError("sender is not joined to the room")
    _check_sender_power(room_version, event, auth_events)
    if event.type == c.POWER_LEVELS:
        check_power_levels(room_version, event, auth_events)
    if event.type == c.REDACTION and room_version.event_id_in_pdu:
        _check_v1_redaction(room_version, event, auth_events)


def check_create(room_version: RoomVersion, event: Event) -> None:
    """Rule 1: the ``m.room.create`` event.

    Args:
        room_version: The room's version.
        event: The create event.

    Raises:
        AuthError: If the event is rejected.
    """
    if event.prev_event_ids:
        raise AuthError("m.room.create must not have prev_events")
    if room_version.room_id_from_create_event:
        if event.has_pdu_key("room_id"):
            raise AuthError("m.room.create must not have a room_id in this room version")
    elif domain_of(event.room_id) != domain_of(event.sender):
        raise AuthError("room_id domain does not match the sender's domain")
    if "room_version" in event.content:
        version = event.content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError("content.room_version is not a recognised room version")
    if not room_version.implicit_room_creator and "creator" not in event.content:
        raise AuthError("m.room.create has no content.creator")
    if room_version.privileged_creators and "additional_creators" in event.content:
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(
            is_valid_user_id(user, historical=True) for user in extra
        ):
            raise AuthError("additional_creators must be an array of user IDs")


def _check_federation_allowed(event: Event, create: Event) -> None:
    # "If the content of the m.room.create event in the room state has the
    # property m.federate set to false, and the sender domain of the event does
    # not match the sender domain of the create event, reject."
    federate = create.content.get("m.federate", True)
    if federate is False and domain_of(event.sender) != domain_of(create.sender):
        raise AuthError("room is not federated (m.federate is false)")


def _check_aliases(event: Event) -> None:
    # v1-5 rule 4.
    if event.state_key is None:
        raise AuthError("m.room.aliases must be a state event")
    if event.state_key != domain_of(event.sender):
        raise AuthError("m.room.aliases state_key must be the sender's domain")


def _check_sender_power(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    power_levels = auth_events.get(c.POWER_LEVELS_KEY)
    pl_content = power_levels.content if power_levels is not None else None
    sender_level = get_user_power_level(room_version, event.sender, auth_events)
    if event.type == c.THIRD_PARTY_INVITE:
        # "Allow if and only if sender's current power level is greater than or
        # equal to the invite level."
        if sender_level < get_named_level(room_version, "invite", pl_content):
            raise AuthError("sender's power level is below the invite level")
        return
    required = get_send_level(room_version, event.type, event.is_state(), pl_content)
    if required > sender_level:
        raise AuthError(f"sending {event.type} needs power level {required}")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise AuthError("state keys starting with '@' are reserved for that user")


def _check_v1_redaction(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    # v1/v2 rule 11 (removed in v3, see auth_redaction for the later handling).
    power_levels = auth_events.get(c.POWER_LEVELS_KEY)
    redact_level = get_named_level(
        room_version, "redact", power_levels.content if power_levels else None
    )
    if get_user_power_level(room_version, event.sender, auth_events) >= redact_level:
        return
    target = event.redacts
    if target is not None and domain_of(target) == domain_of(event.event_id):
        return
    raise AuthError("sender cannot redact events from another server")
