"""Authorisation rules for ``m.room.member`` events (auth rule 5 in v1, 4 in v6+).

Theory of operation:
    The rules are implemented in the order the specification lists them, and
    every path ends in either ``return`` (allow) or :class:`AuthError`
    (reject), mirroring "allow"/"reject" in the text.  Room version
    differences are selected by :class:`RoomVersion` flags:

    * ``knock_join_rule`` (v7): ``knock`` join rule and membership; leaving
      from ``knock``.
    * ``restricted_join_rule`` (v8): ``restricted`` joins and the signature
      requirement for ``join_authorised_via_users_server``.
    * ``knock_restricted_join_rule`` (v10): ``knock_restricted``.
    * ``implicit_room_creator`` (v11): the first join is by the create
      event's ``sender`` instead of ``content.creator``.

    "Current membership state" of a user is ``content.membership`` of their
    ``m.room.member`` event in ``auth_events``; no event means no membership.
    A room without ``m.room.join_rules`` is treated as ``invite``: the
    specification does not define the join rule of such a room, and this is
    what Synapse does and what "private by default" implies.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nacl.exceptions import CryptoError
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from trioserver.events import constants as c
from trioserver.events.constants import JoinRule, Membership
from trioserver.events.errors import AuthError
from trioserver.events.identifiers import is_valid_user_id
from trioserver.events.jsonutil import StateKey, domain_of
from trioserver.events.power_levels import get_creators, get_named_level, get_user_power_level

if TYPE_CHECKING:
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion

AuthEvents = Mapping[StateKey, "Event"]


def membership_of(auth_events: AuthEvents, user_id: str) -> str | None:
    """The current membership of ``user_id`` in the given state, or ``None``."""
    member = auth_events.get((c.MEMBER, user_id))
    return member.membership if member is not None else None


def join_rule_of(auth_events: AuthEvents) -> str | None:
    """The current join rule; ``invite`` when the room has no join rules event."""
    event = auth_events.get(c.JOIN_RULES_KEY)
    if event is None:
        return JoinRule.INVITE
    rule = event.content.get("join_rule")
    return rule if isinstance(rule, str) else None


def _level(room_version: RoomVersion, name: str, auth_events: AuthEvents) -> int:
    power_levels = auth_events.get(c.POWER_LEVELS_KEY)
    return get_named_level(room_version, name, power_levels.content if power_levels else None)


def check_membership(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    """Apply the ``m.room.member`` authorisation rules.

    Args:
        room_version: The room's version.
        event: An ``m.room.member`` event.
        auth_events: The state to check against (must contain the create event).

    Raises:
        AuthError: If the event is rejected.
    """
    content = event.content
    if event.state_key is None or "membership" not in content:
        raise AuthError("member event needs a state_key and content.membership")
    if room_version.restricted_join_rule and c.AUTHORISING_USER in content:
        _check_authorising_server_signed(event)
    membership = content["membership"]
    if membership == Membership.JOIN:
        _check_join(room_version, event, auth_events)
    elif membership == Membership.INVITE:
        _check_invite(room_version, event, auth_events)
    elif membership == Membership.LEAVE:
        _check_leave(room_version, event, auth_events)
    elif membership == Membership.BAN:
        _check_ban(room_version, event, auth_events)
    elif membership == Membership.KNOCK and room_version.knock_join_rule:
        _check_knock(room_version, event, auth_events)
    else:
        raise AuthError(f"unknown membership {membership!r}")


def _check_authorising_server_signed(event: Event) -> None:
    # Rule "If the event is not validly signed by the homeserver of the user ID
    # denoted by the key, reject".  Checking the signature needs that server's
    # keys, which is I/O; the receiving server verifies every server listed by
    # signing.required_signature_servers() (which includes this one) before the
    # auth rules run.  Here we only require that such a signature is present.
    authoriser = event.content[c.AUTHORISING_USER]
    if not is_valid_user_id(authoriser, historical=True):
        raise AuthError("join_authorised_via_users_server is not a user ID")
    if domain_of(authoriser) not in event.signatures:
        raise AuthError("event is not signed by the authorising user's server")


def _check_join(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    create = auth_events[c.CREATE_KEY]
    # "If the only previous event is an m.room.create and the state_key is the
    # creator [v11+: the sender of the m.room.create], allow."
    if room_version.implicit_room_creator:
        first_joiners = frozenset({create.sender})
    else:
        first_joiners = get_creators(room_version, create)
    if event.prev_event_ids == [create.event_id] and event.state_key in first_joiners:
        return
    if event.sender != event.state_key:
        raise AuthError("cannot join on behalf of another user")
    current = membership_of(auth_events, event.sender)
    if current == Membership.BAN:
        raise AuthError("sender is banned")
    join_rule = join_rule_of(auth_events)
    if join_rule == JoinRule.INVITE or (
        room_version.knock_join_rule and join_rule == JoinRule.KNOCK
    ):
        if current in (Membership.INVITE, Membership.JOIN):
            return
        raise AuthError(f"join rule is {join_rule} and sender is not invited")
    if _is_restricted(room_version, join_rule):
        if current in (Membership.JOIN, Membership.INVITE):
            return
        _check_join_authoriser(room_version, event, auth_events)
        return
    if join_rule == JoinRule.PUBLIC:
        return
    raise AuthError(f"cannot join a room with join rule {join_rule!r}")


def _is_restricted(room_version: RoomVersion, join_rule: str | None) -> bool:
    return (room_version.restricted_join_rule and join_rule == JoinRule.RESTRICTED) or (
        room_version.knock_restricted_join_rule and join_rule == JoinRule.KNOCK_RESTRICTED
    )


def _check_join_authoriser(
    room_version: RoomVersion, event: Event, auth_events: AuthEvents
) -> None:
    # "If the join_authorised_via_users_server key in content is not a user with
    # sufficient permission to invite other users or is not a joined member of
    # the room, reject."
    authoriser = event.content.get(c.AUTHORISING_USER)
    if not isinstance(authoriser, str):
        raise AuthError("restricted join without join_authorised_via_users_server")
    if membership_of(auth_events, authoriser) != Membership.JOIN:
        raise AuthError("authorising user is not joined to the room")
    authoriser_level = get_user_power_level(room_version, authoriser, auth_events)
    if authoriser_level < _level(room_version, "invite", auth_events):
        raise AuthError("authorising user cannot invite")


def _check_invite(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    target = event.state_key
    assert target is not None
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, auth_events)
        return
    if membership_of(auth_events, event.sender) != Membership.JOIN:
        raise AuthError("inviter is not joined to the room")
    if membership_of(auth_events, target) in (Membership.JOIN, Membership.BAN):
        raise AuthError("invitee is already joined or is banned")
    sender_level = get_user_power_level(room_version, event.sender, auth_events)
    if sender_level < _level(room_version, "invite", auth_events):
        raise AuthError("sender's power level is below the invite level")


def _check_third_party_invite(event: Event, auth_events: AuthEvents) -> None:
    target = event.state_key
    if membership_of(auth_events, str(target)) == Membership.BAN:
        raise AuthError("invitee is banned")
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError("third_party_invite has no signed object")
    if "mxid" not in signed or "token" not in signed:
        raise AuthError("third_party_invite.signed lacks mxid or token")
    if signed["mxid"] != target:
        raise AuthError("third_party_invite.signed.mxid does not match the state_key")
    token = signed["token"]
    tpi_event = auth_events.get((c.THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if tpi_event is None:
        raise AuthError("no m.room.third_party_invite event for the token")
    if tpi_event.sender != event.sender:
        raise AuthError("sender did not send the m.room.third_party_invite")
    if not _signed_by_any(signed, _public_keys(tpi_event.content)):
        raise AuthError("third_party_invite.signed has no valid signature")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    keys = [content["public_key"]] if isinstance(content.get("public_key"), str) else []
    entries = content.get("public_keys")
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_by_any(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    # "If any signature in signed matches any public key in the
    # m.room.third_party_invite event, allow."
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for public_key in public_keys:
        for server, server_sigs in signatures.items():
            if not isinstance(server_sigs, Mapping):
                continue
            for key_id in server_sigs:
                # Only ed25519 is defined ("Signing Details"); skip other algorithms.
                if str(key_id).startswith("ed25519:") and _verifies(
                    dict(signed), server, key_id, public_key
                ):
                    return True
    return False


def _verifies(signed: dict[str, Any], server: str, key_id: str, public_key: str) -> bool:
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key))
        verify_signed_json(signed, server, verify_key)
    except (SignatureVerifyException, ValueError, binascii.Error, CryptoError, TypeError):
        return False
    return True


def _check_leave(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    target = str(event.state_key)
    sender_membership = membership_of(auth_events, event.sender)
    if event.sender == target:
        allowed = {Membership.INVITE, Membership.JOIN}
        if room_version.knock_join_rule:
            allowed.add(Membership.KNOCK)
        if sender_membership in allowed:
            return
        raise AuthError("cannot leave: not invited, joined or knocking")
    if sender_membership != Membership.JOIN:
        raise AuthError("sender is not joined to the room")
    sender_level = get_user_power_level(room_version, event.sender, auth_events)
    target_level = get_user_power_level(room_version, target, auth_events)
    if membership_of(auth_events, target) == Membership.BAN and sender_level < _level(
        room_version, "ban", auth_events
    ):
        raise AuthError("sender's power level is below the ban level (unban)")
    if sender_level >= _level(room_version, "kick", auth_events) and target_level < sender_level:
        return
    raise AuthError("sender cannot kick: needs the kick level and more power than the target")


def _check_ban(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    if membership_of(auth_events, event.sender) != Membership.JOIN:
        raise AuthError("sender is not joined to the room")
    sender_level = get_user_power_level(room_version, event.sender, auth_events)
    target_level = get_user_power_level(room_version, str(event.state_key), auth_events)
    if sender_level >= _level(room_version, "ban", auth_events) and target_level < sender_level:
        return
    raise AuthError("sender cannot ban: needs the ban level and more power than the target")


def _check_knock(room_version: RoomVersion, event: Event, auth_events: AuthEvents) -> None:
    join_rule = join_rule_of(auth_events)
    knockable = join_rule == JoinRule.KNOCK or (
        room_version.knock_restricted_join_rule and join_rule == JoinRule.KNOCK_RESTRICTED
    )
    if not knockable:
        raise AuthError(f"cannot knock on a room with join rule {join_rule!r}")
    if event.sender != event.state_key:
        raise AuthError("cannot knock on behalf of another user")
    if membership_of(auth_events, event.sender) in (
        Membership.BAN,
        Membership.INVITE,
        Membership.JOIN,
    ):
        raise AuthError("cannot knock while banned, invited or joined")
