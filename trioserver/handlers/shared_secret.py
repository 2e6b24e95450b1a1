"""Synapse-compatible shared-secret registration (``/_synapse/admin/v1/register``).

Admin tools and test suites (e.g. ``register_new_matrix_user``, Complement) create accounts
this way: they fetch a nonce, then POST the account with an HMAC-SHA1 over
``nonce NUL username NUL password NUL admin|notadmin [NUL user_type]`` keyed by the shared
secret. A nonce is accepted once, within 60 seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.handlers.accounts import AccountsHandler, LoginResult

NONCE_LIFETIME_S = 60
USER_TYPES = frozenset({"support", "bot"})


def _bad(message: str, errcode: str = "M_UNKNOWN") -> MatrixError:
    return MatrixError(errcode, message, status=400)


def _text_field(body: dict[str, Any], key: str) -> bytes:
    if key not in body:
        raise _bad(f"{key} must be specified", "M_BAD_JSON")
    value = body[key]
    if not isinstance(value, str) or len(value) > 512 or "\x00" in value:
        raise _bad(f"Invalid {key}")
    return value.encode("utf-8")


def registration_mac(
    secret: str, nonce: str, username: str, password: str, admin: bool, user_type: str | None
) -> str:
    """The HMAC a client must send (hex)."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    mac.update(b"\x00".join(p.encode("utf-8") for p in parts))
    return mac.hexdigest()


class SharedSecretRegistration:
    """Issues nonces and registers users whose request carries a valid HMAC."""

    def __init__(
        self,
        secret: str | None,
        accounts: AccountsHandler,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._accounts = accounts
        self._clock = clock
        self._nonces: dict[str, float] = {}

    def _expire(self) -> None:
        now = self._clock()
        for nonce, issued in list(self._nonces.items()):
            if now - issued > NONCE_LIFETIME_S:
                del self._nonces[nonce]

    def new_nonce(self) -> str:
        """A fresh single-use nonce."""
        self._expire()
        nonce = secrets.token_hex(64)
        self._nonces[nonce] = self._clock()
        return nonce

    async def register(self, body: dict[str, Any], ip: str | None) -> LoginResult:
        """Register the user described by `body` if its MAC is right.

        Raises:
            MatrixError: 400 for bad fields or an unknown nonce, 403 for a wrong MAC, and the
                usual username errors.
        """
        self._expire()
        if not self._secret:
            raise _bad("Shared secret registration is not enabled")
        nonce = body.get("nonce")
        if nonce is None:
            raise _bad("nonce must be specified", "M_BAD_JSON")
        if not isinstance(nonce, str) or nonce not in self._nonces:
            raise _bad("unrecognised nonce")
        # Spent even when the rest of the request is invalid, so it cannot be retried.
        del self._nonces[nonce]
        username = _text_field(body, "username").decode()
        password = _text_field(body, "password").decode()
        admin = bool(body.get("admin"))
        user_type = body.get("user_type")
        if user_type is not None and (
            not isinstance(user_type, str) or user_type not in USER_TYPES
        ):
            raise _bad("Invalid user type")
        displayname = body.get("displayname")
        if displayname is not None and not isinstance(displayname, str):
            raise _bad("Invalid displayname")
        mac = body.get("mac")
        if not isinstance(mac, str):
            raise _bad("mac must be specified", "M_BAD_JSON")
        want = registration_mac(self._secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode(), mac.encode("ascii", "replace")):
            raise MatrixError("M_FORBIDDEN", "HMAC incorrect")
        return await self._accounts.register(
            username.lower(),
            password,
            admin=admin,
            user_type=user_type,
            displayname=displayname,
            ip=ip,
        )
