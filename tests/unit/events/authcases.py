"""A declarative form for authorisation-rule test cases.

A :class:`Case` describes a room (join rule, power level changes, memberships)
and one new event, plus the expected outcome for a set of room versions.
:func:`expand` turns a table of cases into ``pytest.param`` objects, one per
room version, and :func:`run` builds the room and checks the event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest

from trioserver.events import KNOWN_ROOM_VERSIONS, AuthError, Event, RoomVersion

from tests.unit.events.helpers import CREATOR, MOD, Room, cosign

ALL = tuple(KNOWN_ROOM_VERSIONS)


def since(first: int, last: int = 12) -> tuple[str, ...]:
    """Room version identifiers ``first`` .. ``last`` (inclusive)."""
    return tuple(str(n) for n in range(first, last + 1))


@attrs.frozen
class Case:
    """One authorisation scenario.

    Attributes:
        name: Test ID.
        event: ``(type, sender, state_key, content)`` of the event to check.
        allowed: Expected outcome.
        versions: Room versions the expectation holds for.
        reason: Substring of the AuthError reason when rejected.
        join_rule: Join rule of the room (``None``: no join rules event).
        power_levels: Changes to the default power levels.
        members: Memberships to set up (``MOD`` is joined unless overridden).
        cosign: Extra server signing the event (restricted joins).
        redacts: ``redacts`` of a redaction event.
    """

    name: str
    event: tuple[str, str, str | None, Mapping[str, Any]]
    allowed: bool
    versions: Sequence[str] = ALL
    reason: str | None = None
    join_rule: str | None = "invite"
    power_levels: Mapping[str, Any] = attrs.field(factory=dict)
    members: Mapping[str, str] = attrs.field(factory=dict)
    cosign: str | None = None
    redacts: str | None = None


def expand(cases: Sequence[Case]) -> list[Any]:
    """One ``pytest.param(case, room_version)`` per case and room version."""
    return [
        pytest.param(case, KNOWN_ROOM_VERSIONS[v], id=f"{case.name}-v{v}")
        for case in cases
        for v in case.versions
    ]


def setup_room(case: Case, room_version: RoomVersion) -> Room:
    """Build the room a case describes."""
    room = Room(room_version, join_rule=case.join_rule)
    if case.power_levels:
        room.set_power_levels(**case.power_levels)
    for user_id, membership in {MOD: "join", **case.members}.items():
        # Bans and invites come from the creator; other memberships from the user.
        by_creator = membership in ("ban", "invite")
        room.set_member(user_id, membership, sender=CREATOR if by_creator else None)
    return room


def build(case: Case, room: Room) -> Event:
    """Build the event a case checks."""
    event_type, sender, state_key, content = case.event
    event = room.event(event_type, sender, content, state_key=state_key, redacts=case.redacts)
    return cosign(event, case.cosign) if case.cosign else event


def run(case: Case, room_version: RoomVersion) -> None:
    """Check the case's event against its room and compare with the expectation."""
    room = setup_room(case, room_version)
    event = build(case, room)
    if case.allowed:
        room.check(event)
    else:
        with pytest.raises(AuthError, match=case.reason):
            room.check(event)
