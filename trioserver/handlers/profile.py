"""Profiles: display names and avatars, and their membership events in joined rooms.

Spec "Profiles" (v1.16 generic profile fields): this server stores ``displayname`` and
``avatar_url``; other keys can be read (they are never set, so 404) and deleted (a no-op),
and setting one is refused with 403. A change is copied into a new ``m.room.member`` join
event in every room the user is joined to (spec "Events on Change of Profile Information"),
before the request returns.
"""

from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from trioserver.errors import MatrixError
from trioserver.events import is_valid_user_id
from trioserver.stores.profiles import Profile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from trioserver.handlers.membership import MembershipHandler
    from trioserver.stores.events import EventStore
    from trioserver.stores.profiles import ProfileStore
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

PROFILE_FIELDS = ("displayname", "avatar_url")
# Synapse's limits on the two stored fields.
MAX_LENGTHS = {"displayname": 256, "avatar_url": 1000}
# Spec: profile keys are at most 255 bytes and follow the Common Namespaced Identifier Grammar.
MAX_KEY_BYTES = 255
_KEY_GRAMMAR = re.compile(r"[a-z][a-z0-9_.-]*")
# Member-event keys that describe one membership change, not the member: a profile update
# must not repeat them.
_TRANSITION_KEYS = frozenset(
    {
        "membership",
        "reason",
        "join_authorised_via_users_server",
        "third_party_invite",
        "is_direct",
        *PROFILE_FIELDS,
    }
)


def check_key_name(key: str) -> None:
    """Refuse a malformed profile key with 400 (``M_KEY_TOO_LARGE``/``M_INVALID_PARAM``)."""
    if len(key.encode()) > MAX_KEY_BYTES:
        raise MatrixError("M_KEY_TOO_LARGE", "Profile key too long")
    if _KEY_GRAMMAR.fullmatch(key) is None:
        raise MatrixError(
            "M_INVALID_PARAM", "Profile key does not follow Common Namespaced Identifier Grammar"
        )


def check_user_id(user_id: str) -> None:
    """Refuse a malformed user id with 400 ``M_INVALID_PARAM``."""
    if not is_valid_user_id(user_id, historical=True):
        raise MatrixError("M_INVALID_PARAM", "Invalid user id")


def _field(profile: Profile, key: str) -> str | None:
    return profile.displayname if key == "displayname" else profile.avatar_url


def _new_value(key: str, value: Any) -> str | None:
    """The value to store for `key` (None clears it), validated like Synapse."""
    if not isinstance(value, str):
        raise MatrixError("M_INVALID_PARAM", f"'{key}' must be a string")
    if len(value) > MAX_LENGTHS[key]:
        raise MatrixError("M_INVALID_PARAM", f"'{key}' is too long (max {MAX_LENGTHS[key]})")
    if key == "displayname":
        value = value.strip()
    # An empty value clears the field (what Synapse does, and what older clients send).
    return value or None


class ProfileHandler:
    """Reads and changes local users' profiles."""

    def __init__(
        self,
        profiles: ProfileStore,
        membership: MembershipHandler,
        state: StateStore,
        events: EventStore,
        *,
        server_name: str,
    ) -> None:
        self._profiles = profiles
        self._membership = membership
        self._state = state
        self._events = events
        self._server_suffix = ":" + server_name
        # One profile change at a time per user, so that member events cannot end up
        # carrying an older profile than the store (Synapse serialises these too).
        self._locks: dict[str, trio.Lock] = {}
        # Issue 15: ``await remote_profile(user_id, field)`` asks the user's server.
        self.remote_profile: Callable[[str, str | None], Awaitable[dict[str, Any]]] | None = None

    @asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(user_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            stats = lock.statistics()
            if not stats.locked and stats.tasks_waiting == 0:
                self._locks.pop(user_id, None)

    async def _profile(self, user_id: str, field: str | None = None) -> Profile:
        check_user_id(user_id)
        profile = None
        if user_id.endswith(self._server_suffix):
            profile = await self._profiles.get_profile(user_id)
        elif self.remote_profile is not None:
            # Another server's user: asked over federation (without it, never found).
            fields = await self.remote_profile(user_id, field)
            profile = Profile(fields.get("displayname"), fields.get("avatar_url"))
        if profile is None:
            raise MatrixError("M_NOT_FOUND", "Profile was not found")
        return profile

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """``GET /profile/{userId}``: the fields that are set.

        Raises:
            MatrixError: 400 bad user id; 404 unknown user or nothing set (like Synapse).
        """
        profile = await self._profile(user_id)
        result = {key: _field(profile, key) for key in PROFILE_FIELDS}
        if all(value is None for value in result.values()):
            raise MatrixError("M_NOT_FOUND", "Profile was not found")
        return {key: value for key, value in result.items() if value is not None}

    async def get_field(self, user_id: str, key: str) -> dict[str, Any]:
        """``GET /profile/{userId}/{keyName}``.

        Raises:
            MatrixError: 400 bad user id or key; 404 unknown user or unset generic field.
        """
        check_key_name(key)
        profile = await self._profile(user_id, key if key in PROFILE_FIELDS else None)
        if key in PROFILE_FIELDS:
            # An unset displayname or avatar_url is 200 without the key, as Synapse answers
            # (SyTest 10apidoc/10profile-displayname and 11profile-avatar_url read it first).
            value = _field(profile, key)
            return {} if value is None else {key: value}
        raise MatrixError("M_NOT_FOUND", f"The user has no '{key}' profile field")

    async def set_field(self, requester_id: str, user_id: str, key: str, body: Any) -> None:
        """``PUT /profile/{userId}/{keyName}``: set a field of your own profile.

        Raises:
            MatrixError: 400 bad input, 403 someone else's profile or an unsupported key.
        """
        self._check_writable(requester_id, user_id, key)
        if not isinstance(body, dict) or key not in body:
            raise MatrixError("M_MISSING_PARAM", f"Missing key '{key}'")
        if key not in PROFILE_FIELDS:
            raise MatrixError(
                "M_FORBIDDEN", f"This server does not support setting the '{key}' profile field"
            )
        await self._store(user_id, key, _new_value(key, body[key]))

    async def delete_field(self, requester_id: str, user_id: str, key: str) -> None:
        """``DELETE /profile/{userId}/{keyName}``: clear a field of your own profile.

        Raises:
            MatrixError: 400 bad user id or key, 403 someone else's profile.
        """
        self._check_writable(requester_id, user_id, key)
        if key in PROFILE_FIELDS:
            await self._store(user_id, key, None)
        # Other keys are never stored: "deleted or doesn't exist" is already true.

    def _check_writable(self, requester_id: str, user_id: str, key: str) -> None:
        check_user_id(user_id)
        check_key_name(key)
        if user_id != requester_id:
            raise MatrixError("M_FORBIDDEN", "Cannot change another user's profile")

    async def _store(self, user_id: str, key: str, value: str | None) -> None:
        async with self._user_lock(user_id):
            if key == "displayname":
                await self._profiles.set_displayname(user_id, value)
            else:
                await self._profiles.set_avatar_url(user_id, value)
            await self._update_join_events(user_id)

    async def _update_join_events(self, user_id: str) -> None:
        """Send a join event with the new profile into each room the user is joined to."""
        profile = await self._profiles.get_profile(user_id)
        if profile is None:
            return
        for row in await self._state.local_memberships(user_id, ["join"]):
            current = await self._events.get_event(row.event_id)
            content: dict[str, Any] = {}
            if current is not None and current.redacted_by is None:
                content = dict(current.event.content)
            extra = {k: v for k, v in content.items() if k not in _TRANSITION_KEYS}
            extra.update(
                (key, value)
                for key in PROFILE_FIELDS
                if (value := _field(profile, key)) is not None
            )
            try:
                await self._membership.update_membership(
                    user_id, row.room_id, user_id, "join", extra_content=extra
                )
            except MatrixError as err:
                # One room refusing the update (e.g. the server just left it) must not stop
                # the others; Synapse logs and carries on too.
                logger.warning("profile update of %s in %s failed: %s", user_id, row.room_id, err)
