"""Profiles: display names and avatars, and their membership events in joined rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.handlers.membership import MembershipHandler
    from trioserver.stores.profiles import ProfileStore
    from trioserver.stores.state import StateStore


class ProfileHandler:
    """Reads and changes local users' profiles."""

    def __init__(
        self,
        profiles: ProfileStore,
        membership: MembershipHandler,
        state: StateStore,
        *,
        server_name: str,
    ) -> None:
        self._profiles = profiles
        self._membership = membership
        self._state = state
        self._server_name = server_name
