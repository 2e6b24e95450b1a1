"""Guest accounts in rooms (spec "Guest Access", "Server behaviour").

Guests may join a room only while its ``m.room.guest_access`` state says ``can_join``, and
when that stops being so, the server sets the membership of its guests in the room to
``leave``. As in Synapse, a guest's member events carry ``"kind": "guest"``, which is how the
guests of a room are found (those still guests: an upgraded account stays); each leaves by its
own leave event (not a kick by the sender of the change).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioserver.events import Event
    from trioserver.handlers.accounts import AccountsHandler
    from trioserver.handlers.membership import MembershipHandler
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

GUEST_ACCESS = "m.room.guest_access"
MEMBER = "m.room.member"


def guests_can_join(guest_access: Event | None) -> bool:
    """Whether the room's ``m.room.guest_access`` event lets guests join."""
    return guest_access is not None and guest_access.content.get("guest_access") == "can_join"


def check_guest_membership(state: Mapping[tuple[str, str], Event], membership: str) -> None:
    """Refuse what a guest may not do to its membership: only join (where guests may) and
    leave.

    Raises:
        MatrixError: 403 ``M_GUEST_ACCESS_FORBIDDEN``, or ``M_FORBIDDEN`` for a room without
            guest access (Synapse's answer).
    """
    if membership not in ("join", "leave"):
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guests can only join and leave rooms")
    if membership == "join" and not guests_can_join(state.get((GUEST_ACCESS, ""))):
        raise MatrixError("M_FORBIDDEN", "Guest access not allowed")


async def kick_guests_if_forbidden(
    membership: MembershipHandler,
    accounts: AccountsHandler,
    state: StateStore,
    events: EventStore,
    room_id: str,
) -> None:
    """After a change of ``m.room.guest_access``: make local guests leave unless it is
    ``can_join`` (guests who have since upgraded to full accounts stay)."""
    current = await state.current_state(room_id)
    access_id = current.get((GUEST_ACCESS, ""))
    access = await events.get_event(access_id) if access_id is not None else None
    if guests_can_join(access.event if access is not None else None):
        return
    member_ids = [e for (t, _), e in current.items() if t == MEMBER]
    found = await events.get_events(member_ids)
    for stored in found.values():
        event = stored.event
        target = event.state_key
        if target is None or event.content.get("kind") != "guest":
            continue
        if event.membership not in ("join", "invite") or not await accounts.is_guest(target):
            continue
        try:
            await membership.update_membership(target, room_id, target, "leave", guest=True)
        except MatrixError as err:  # boundary: one guest's refusal must not stop the rest
            logger.warning("guest %s could not leave %s: %s", target, room_id, err)
