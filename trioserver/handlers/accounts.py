"""Accounts: registration, login sessions, passwords and deactivation."""

from __future__ import annotations

import secrets
import string
import time
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.events import InvalidIdentifierError, parse_user_id
from trioserver.identifiers import MAX_USER_ID_LENGTH, is_valid_new_localpart
from trioserver.stores.accounts import NewLogin, UserRow

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioserver.handlers.auth import AuthHandler, Requester
    from trioserver.handlers.client_ips import ClientIpRecorder
    from trioserver.handlers.uia import StageChecker
    from trioserver.stores.accounts import AccountStore, DeviceRow
    from trioserver.stores.erasure import ErasureStore

# Synapse refuses passwords longer than this; bcrypt only uses the first 72 bytes anyway.
MAX_PASSWORD_LENGTH = 512


@attrs.frozen
class LoginResult:
    """What a successful login or registration hands back."""

    user_id: str
    device_id: str | None = None
    access_token: str | None = None


def _new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def _new_access_token() -> str:
    return "tsv_" + secrets.token_urlsafe(32)


def check_password_shape(password: Any, key: str = "password") -> str:
    """A password from a request body: a non-empty string of bounded length."""
    if not isinstance(password, str):
        raise MatrixError("M_INVALID_PARAM", f"'{key}' must be a string")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError("M_INVALID_PARAM", "Password too long")
    return password


class AccountsHandler:
    """Creates accounts and login sessions and ends them."""

    def __init__(
        self,
        accounts: AccountStore,
        auth: AuthHandler,
        erasure: ErasureStore,
        *,
        server_name: str,
        client_ips: ClientIpRecorder | None = None,
    ) -> None:
        self._accounts = accounts
        self._auth = auth
        self._erasure = erasure
        self.server_name = server_name
        self._client_ips = client_ips
        self._device_listeners: list[Callable[[str], Awaitable[None]]] = []

    def add_device_listener(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call `listener(user_id)` after a device of the user is created, renamed or deleted
        (the device-list stream and key cleanup hang off this)."""
        self._device_listeners.append(listener)

    async def _devices_changed(self, user_id: str) -> None:
        for listener in self._device_listeners:
            await listener(user_id)

    def user_id_for(self, localpart: str) -> str:
        """The full user id of a local user."""
        return f"@{localpart}:{self.server_name}"

    def check_new_localpart(self, localpart: str) -> str:
        """Validate a requested username for a new account; return its user id.

        Raises:
            MatrixError: 400 ``M_INVALID_USERNAME``.
        """
        if not localpart:
            raise MatrixError("M_INVALID_USERNAME", "User ID cannot be empty")
        if not is_valid_new_localpart(localpart):
            raise MatrixError(
                "M_INVALID_USERNAME",
                "User ID can only contain characters a-z, 0-9, or '=_-./+' "
                "and may not begin with '_'",
            )
        if localpart.isdigit():
            raise MatrixError(
                "M_INVALID_USERNAME", "Numeric user IDs are reserved for generated user IDs."
            )
        user_id = self.user_id_for(localpart)
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise MatrixError(
                "M_INVALID_USERNAME", f"User ID may not be longer than {MAX_USER_ID_LENGTH}"
            )
        return user_id

    async def is_available(self, localpart: str) -> bool:
        """Whether a new user could take `localpart` (validating it first)."""
        user_id = self.check_new_localpart(localpart)
        return await self._accounts.get_user(user_id) is None

    async def register(
        self,
        localpart: str | None,
        password: str | None,
        *,
        admin: bool = False,
        user_type: str | None = None,
        displayname: str | None = None,
        login: bool = True,
        device_id: str | None = None,
        device_display_name: str | None = None,
        ip: str | None = None,
        guest: bool = False,
        user_agent: str | None = None,
    ) -> LoginResult:
        """Create an account, and a first login session unless `login` is False.

        Args:
            guest: a guest account (spec "Guest Access"); give no localpart, as guests get
                the next free number, as in Synapse.

        Raises:
            MatrixError: ``M_INVALID_USERNAME`` or ``M_USER_IN_USE``.
        """
        # Without a localpart, the store picks the next free number when it creates the user.
        user_id = "" if localpart is None else self.check_new_localpart(localpart)
        password_hash = await self._auth.hash_password(password) if password else None
        now_ms = int(time.time() * 1000)
        user = UserRow(user_id, password_hash, admin, False, user_type, now_ms, guest)
        new_login = (
            self._new_login(user_id, device_id, device_display_name, ip, user_agent)
            if login
            else None
        )
        if localpart is None:
            user_id = await self._accounts.create_numbered_user(
                self.server_name, user, displayname=displayname or None, login=new_login
            )
        elif not await self._accounts.create_user(
            user, displayname=displayname or localpart, login=new_login
        ):
            raise MatrixError("M_USER_IN_USE", "User ID already taken.")
        if new_login is None:
            return LoginResult(user_id)
        await self._devices_changed(user_id)
        return LoginResult(user_id, new_login.device_id, new_login.token)

    async def is_guest(self, user_id: str) -> bool:
        """Whether the user is a (not yet upgraded) guest account."""
        user = await self._accounts.get_user(user_id)
        return user is not None and user.is_guest

    async def check_guest_upgrade(self, localpart: str, guest_access_token: str) -> str:
        """The guest's user id, when `guest_access_token` is a guest's and names `localpart`.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` otherwise (Synapse's answer too), 401 for an
                unknown token.
        """
        requester = await self._auth.requester_for_token(guest_access_token)
        if not requester.is_guest or requester.user_id != self.user_id_for(localpart):
            raise MatrixError(
                "M_FORBIDDEN",
                "Cannot register taken user ID without valid guest credentials for that user.",
            )
        return requester.user_id

    async def upgrade_guest(
        self,
        localpart: str,
        guest_access_token: str,
        password: str | None,
        *,
        login: bool = True,
        device_id: str | None = None,
        device_display_name: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> LoginResult:
        """Make a guest a full account: spec "Guest Access", ``guest_access_token`` in
        /register. The user id stays the same.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` when the token is not that guest's.
        """
        user_id = await self.check_guest_upgrade(localpart, guest_access_token)
        password_hash = await self._auth.hash_password(password) if password else None
        new_login = (
            self._new_login(user_id, device_id, device_display_name, ip, user_agent)
            if login
            else None
        )
        old_tokens = await self._accounts.upgrade_guest(user_id, password_hash, new_login)
        if old_tokens is None:
            raise MatrixError("M_FORBIDDEN", "This account is not a guest account")
        # The cached requesters of the old tokens still say "guest".
        await self._auth.forget_tokens(old_tokens)
        if new_login is None:
            return LoginResult(user_id)
        await self._devices_changed(user_id)
        return LoginResult(user_id, new_login.device_id, new_login.token)

    def _new_login(
        self,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        ip: str | None,
        user_agent: str | None,
    ) -> NewLogin:
        return NewLogin(
            user_id=user_id,
            device_id=device_id or _new_device_id(),
            token=_new_access_token(),
            display_name=display_name,
            ip=ip,
            now_ms=int(time.time() * 1000),
            user_agent=user_agent,
        )

    def resolve_user(self, user: str) -> str:
        """The user id meant by a login identifier: a full user id or a localpart.

        Localparts are matched case-insensitively, as registration stores them lower-cased.
        """
        if user.startswith("@"):
            try:
                localpart, server_name = parse_user_id(user, historical=True)
            except InvalidIdentifierError:
                raise MatrixError("M_INVALID_PARAM", "Invalid user ID") from None
            return f"@{localpart.lower()}:{server_name}"
        return self.user_id_for(user.lower())

    async def login_with_password(
        self,
        user: str,
        password: str,
        *,
        device_id: str | None,
        device_display_name: str | None,
        ip: str | None,
        user_agent: str | None = None,
    ) -> LoginResult:
        """Check a password and open a login session.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for a wrong user or password,
                403 ``M_USER_DEACTIVATED`` for a deactivated account.
        """
        user_id = self.resolve_user(user)
        row = await self._accounts.get_user(user_id)
        if row is not None and row.deactivated:
            raise MatrixError("M_USER_DEACTIVATED", "This account has been deactivated")
        if row is None or not await self._auth.check_password(user_id, password):
            raise MatrixError("M_FORBIDDEN", "Invalid username or password")
        login = self._new_login(user_id, device_id, device_display_name, ip, user_agent)
        # Logging in on an existing device ends that device's old token.
        await self._auth.forget_tokens(await self._accounts.add_login(login))
        await self._devices_changed(user_id)
        return LoginResult(user_id, login.device_id, login.token)

    async def login_again(
        self,
        user_id: str,
        *,
        device_id: str | None,
        device_display_name: str | None,
        ip: str | None,
        user_agent: str | None = None,
    ) -> LoginResult:
        """Open a new login session for a user the caller has already authenticated (a
        replayed registration, which Synapse answers with a fresh device)."""
        login = self._new_login(user_id, device_id, device_display_name, ip, user_agent)
        await self._auth.forget_tokens(await self._accounts.add_login(login))
        await self._devices_changed(user_id)
        return LoginResult(user_id, login.device_id, login.token)

    def password_stage(self) -> StageChecker:
        """A UIA ``m.login.password`` checker; it returns the user it authenticated, whom the
        caller compares with the requester (another user's valid password is a 403, not a
        failed stage, as Synapse answers)."""

        async def check(auth: dict[str, Any]) -> str:
            identifier = auth.get("identifier")
            user = auth.get("user")
            if isinstance(identifier, dict) and identifier.get("type") == "m.id.user":
                user = identifier.get("user")
            password = auth.get("password")
            if not isinstance(user, str) or not isinstance(password, str):
                raise MatrixError("M_MISSING_PARAM", "Missing user or password", status=400)
            user_id = self.resolve_user(user)
            if not await self._auth.check_password(user_id, password):
                raise MatrixError("M_FORBIDDEN", "Invalid username or password")
            return user_id

        return check

    async def logout(self, requester: Requester) -> None:
        """End this session: delete its device and token."""
        tokens = await self._accounts.delete_devices(requester.user_id, [requester.device_id])
        await self._auth.forget_tokens([requester.access_token, *tokens])
        await self._devices_changed(requester.user_id)

    async def is_admin(self, user_id: str) -> bool:
        """Whether `user_id` is a server admin (an active account with ``admin`` set)."""
        row = await self._accounts.get_user(user_id)
        return row is not None and row.admin and not row.deactivated

    def seen_nowait(self, requester: Requester, ip: str | None, user_agent: str | None) -> None:
        """Note a request of `requester`'s device (for ``last_seen_*``; never blocks)."""
        if self._client_ips is not None:
            self._client_ips.record_nowait(requester, ip, user_agent)

    async def devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices, last seen as of the latest request."""
        devices = await self._accounts.get_devices(user_id)
        return devices if self._client_ips is None else self._client_ips.overlay(devices)

    async def device(self, user_id: str, device_id: str) -> DeviceRow | None:
        """One of the user's devices, or None."""
        device = await self._accounts.get_device(user_id, device_id)
        if device is None or self._client_ips is None:
            return device
        return self._client_ips.overlay([device])[0]

    async def rename_device(self, user_id: str, device_id: str, display_name: str) -> bool:
        """Set a device's display name; False when there is no such device."""
        renamed = await self._accounts.update_device(user_id, device_id, display_name)
        if renamed:
            await self._devices_changed(user_id)
        return renamed

    async def delete_devices(self, user_id: str, device_ids: list[str] | None) -> None:
        """Delete devices (all when None) and end their sessions."""
        tokens = await self._accounts.delete_devices(user_id, device_ids)
        await self._auth.forget_tokens(tokens)
        await self._devices_changed(user_id)

    async def change_password(
        self, user_id: str, new_password: str, *, logout_other_devices: bool, keep: str | None
    ) -> None:
        """Set a new password; optionally end every session except device `keep`."""
        await self._accounts.set_password_hash(
            user_id, await self._auth.hash_password(new_password)
        )
        if logout_other_devices:
            tokens = await self._accounts.delete_other_devices(user_id, keep)
            await self._auth.forget_tokens(tokens)
            await self._devices_changed(user_id)

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        """Deactivate an account: no password, no devices, no sessions. With `erase`, the
        user's events are from now on served redacted to users who were not joined when they
        were sent (spec "Account deactivation", ``erase``)."""
        if erase:
            await self._erasure.mark_erased(user_id)
        tokens = await self._accounts.deactivate(user_id)
        await self._auth.forget_tokens(tokens)
        await self._devices_changed(user_id)
