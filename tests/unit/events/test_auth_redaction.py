"""When redactions take effect ("Handling redactions") and the local client policy."""

from __future__ import annotations

import pytest

from trioserver.events import (
    AuthError,
    Event,
    RoomVersion,
    RoomVersions,
    check_client_redaction,
    should_apply_redaction,
)

from tests.unit.events.helpers import ALICE, BOB, CAROL, CREATOR, MOD, Room

ALICE2 = "@alice2:hs.test"


def _room(version: RoomVersion) -> Room:
    room = Room(version)
    for user in (MOD, ALICE, ALICE2, BOB, CAROL):
        room.set_member(user, "join")
    return room


def _message(room: Room, sender: str) -> Event:
    return room.apply(room.event("m.room.message", sender, {"body": "x"}))


# (redaction sender, target sender, applies in v1/v2, applies in v3+)
APPLY_CASES = [
    ("own-event", ALICE, ALICE, True, True),
    ("same-server-other-user", ALICE, ALICE2, True, True),  # domain match (event ID / sender)
    ("other-server-without-level", ALICE, BOB, False, False),
    ("other-server-same-remote", BOB, CAROL, True, True),
    ("moderator", MOD, BOB, True, True),
]


@pytest.mark.parametrize(
    ("redacter", "author", "applies", "room_version"),
    [
        pytest.param(r, a, v1 if v.event_id_in_pdu else v3, v, id=f"{name}-v{v.identifier}")
        for name, r, a, v1, v3 in APPLY_CASES
        for v in (
            RoomVersions.V1,
            RoomVersions.V2,
            RoomVersions.V3,
            RoomVersions.V11,
            RoomVersions.V12,
        )
    ],
)
def test_should_apply_redaction(
    redacter: str, author: str, applies: bool, room_version: RoomVersion
) -> None:
    room = _room(room_version)
    target = _message(room, author)
    redaction = room.event("m.room.redaction", redacter, {}, redacts=target.event_id)
    assert should_apply_redaction(room_version, redaction, target, room.state) is applies


@pytest.mark.parametrize("room_version", [RoomVersions.V2, RoomVersions.V11])
def test_redaction_must_target_the_event_in_the_same_room(room_version: RoomVersion) -> None:
    room = _room(room_version)
    target = _message(room, ALICE)
    other_target = _message(room, ALICE)
    redaction = room.event("m.room.redaction", MOD, {}, redacts=target.event_id)
    assert not should_apply_redaction(room_version, redaction, other_target, room.state)
    other_room = Room(room_version, creator="@creator:elsewhere.test")
    foreign = other_room.event("m.room.message", "@creator:elsewhere.test", {})
    wrong_room = room.event("m.room.redaction", MOD, {}, redacts=foreign.event_id)
    assert not should_apply_redaction(room_version, wrong_room, foreign, room.state)
    assert not should_apply_redaction(room_version, target, target, room.state)


@pytest.mark.parametrize(
    ("sender", "author", "allowed"),
    [
        (ALICE, ALICE, True),  # own event
        (ALICE, ALICE2, False),  # someone else's, no redact level (server domain irrelevant)
        (ALICE, BOB, False),
        (MOD, ALICE, True),  # redact level
        (CREATOR, BOB, True),
    ],
)
@pytest.mark.parametrize("room_version", [RoomVersions.V1, RoomVersions.V11, RoomVersions.V12])
def test_client_redaction_policy(
    room_version: RoomVersion, sender: str, author: str, allowed: bool
) -> None:
    room = _room(room_version)
    target = _message(room, author)

    def check() -> None:
        check_client_redaction(
            room_version,
            sender=sender,
            room_id=str(room.room_id),
            target=target,
            auth_events=room.state,
        )

    if allowed:
        check()
    else:
        with pytest.raises(AuthError, match="redact level"):
            check()


def test_client_redaction_special_cases() -> None:
    version = RoomVersions.V11
    room = _room(version)
    room_id = str(room.room_id)
    # Unknown target: only users with the redact level may redact it.
    check_client_redaction(
        version, sender=MOD, room_id=room_id, target=None, auth_events=room.state
    )
    with pytest.raises(AuthError, match="unknown event"):
        check_client_redaction(
            version, sender=ALICE, room_id=room_id, target=None, auth_events=room.state
        )
    # The create event and server ACLs are never redactable, not even by the creator.
    acl = room.set_state("m.room.server_acl", "", {"allow": ["*"]})
    for target in (room.create, acl):
        with pytest.raises(AuthError, match="cannot be redacted"):
            check_client_redaction(
                version, sender=CREATOR, room_id=room_id, target=target, auth_events=room.state
            )
    # Events from another room cannot be redacted through this room.
    mine = _message(room, ALICE)
    with pytest.raises(AuthError, match="another room"):
        check_client_redaction(
            version, sender=ALICE, room_id="!other:hs.test", target=mine, auth_events=room.state
        )
