"""Room-level special cases of the member rules: m.federate and the creator's first join."""

from __future__ import annotations

import pytest

from trioserver.events import AuthError, RoomVersion, RoomVersions

from tests.unit.events.helpers import ALICE, BOB, CAROL, CREATOR, Room

M = "m.room.member"
JOIN = {"membership": "join"}


@pytest.mark.parametrize("room_version", [RoomVersions.V1, RoomVersions.V10, RoomVersions.V12])
@pytest.mark.parametrize(("user", "allowed"), [(BOB, False), (CAROL, False), (ALICE, True)])
def test_federate_false(room_version: RoomVersion, user: str, allowed: bool) -> None:
    # Rule 3 (v1): m.federate false blocks every event from other servers.
    create_content = {"room_version": room_version.identifier, "m.federate": False}
    room = Room(room_version, create_content=create_content, join_rule="public")
    event = room.event(M, user, JOIN, state_key=user)
    if allowed:
        room.check(event)
    else:
        with pytest.raises(AuthError, match=r"m\.federate"):
            room.check(event)


@pytest.mark.parametrize("federate", [True, "false", 0, None])
def test_federate_only_literal_false_blocks(federate: object) -> None:
    create_content = {"room_version": "10", "m.federate": federate}
    room = Room(RoomVersions.V10, create_content=create_content, join_rule="public")
    room.check(room.event(M, BOB, JOIN, state_key=BOB))


@pytest.mark.parametrize(
    "room_version", [RoomVersions.V1, RoomVersions.V10, RoomVersions.V11, RoomVersions.V12]
)
def test_first_join_by_creator_right_after_create(room_version: RoomVersion) -> None:
    room = Room(room_version, creator_joins=False)
    room.check(room.event(M, CREATOR, JOIN, state_key=CREATOR))
    # Anyone else needs a join rule that lets them in (none: invite-only).
    with pytest.raises(AuthError):
        room.check(room.event(M, ALICE, JOIN, state_key=ALICE))
    # The special case only applies when the create event is the only prev event.
    other = room.apply(room.event("m.room.message", CREATOR, {}))
    with pytest.raises(AuthError):
        room.check(
            room.event(
                M,
                CREATOR,
                JOIN,
                state_key=CREATOR,
                prev_event_ids=[room.create.event_id, other.event_id],
            )
        )


@pytest.mark.parametrize(
    ("room_version", "creator_may_join", "content_creator_may_join"),
    [
        (RoomVersions.V1, False, True),  # v1-10: content.creator is the creator
        (RoomVersions.V10, False, True),
        (RoomVersions.V11, True, False),  # v11+: the create event's sender
        (RoomVersions.V12, True, False),
    ],
)
def test_first_join_creator_definition(
    room_version: RoomVersion, creator_may_join: bool, content_creator_may_join: bool
) -> None:
    content = {"room_version": room_version.identifier, "creator": ALICE}
    room = Room(room_version, creator_joins=False, create_content=content)
    for user, expected in ((CREATOR, creator_may_join), (ALICE, content_creator_may_join)):
        event = room.event(M, user, JOIN, state_key=user)
        if expected:
            room.check(event)
        else:
            with pytest.raises(AuthError):
                room.check(event)


def test_v12_additional_creator_has_no_first_join_privilege() -> None:
    content = {"room_version": "12", "additional_creators": [ALICE]}
    room = Room(RoomVersions.V12, creator_joins=False, create_content=content)
    with pytest.raises(AuthError):
        room.check(room.event(M, ALICE, JOIN, state_key=ALICE))
