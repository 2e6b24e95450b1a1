"""OpenID tokens (client-server API "OpenID"; server-server API "OpenID").

A client asks for a token and hands it to a third party (an integration manager, a widget),
which asks ``GET /_matrix/federation/v1/openid/userinfo`` who it belongs to. The token proves
that and nothing else: it is not an access token.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.stores.openid import OpenIdStore

# Synapse's default lifetime (one hour), which is also the spec's example.
TOKEN_LIFETIME_MS = 3_600_000


class OpenIdHandler:
    """Issues OpenID tokens and resolves them for third parties."""

    def __init__(
        self, store: OpenIdStore, *, server_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._server_name = server_name
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def request_token(self, requester: str, user_id: str) -> dict[str, Any]:
        """A new token for `user_id`, who must be the requester.

        Raises:
            MatrixError: 403 for another user.
        """
        if requester != user_id:
            raise MatrixError("M_FORBIDDEN", "Cannot request tokens for other users.")
        token = secrets.token_urlsafe(24)
        now_ms = self._now_ms()
        await self._store.add_token(token, user_id, now_ms + TOKEN_LIFETIME_MS, now_ms)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self._server_name,
            "expires_in": TOKEN_LIFETIME_MS // 1000,
        }

    async def user_info(self, token: str | None) -> dict[str, str]:
        """``{"sub": user_id}`` for a valid token.

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN`` for a missing, unknown or expired token.
        """
        user_id = None if not token else await self._store.user_for_token(token, self._now_ms())
        if user_id is None:
            raise MatrixError("M_UNKNOWN_TOKEN", "Invalid OpenID access token", status=401)
        return {"sub": user_id}
