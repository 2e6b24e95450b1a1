"""TURN credentials for VoIP clients (spec "Voice over IP", ``GET /voip/turnServer``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.config import VoipConfig


def turn_credentials(voip: VoipConfig, user_id: str, now: float) -> dict[str, Any]:
    """The TURN server answer for `user_id` at time `now` (seconds), ``{}`` when none is set.

    With a shared secret the credentials are those of the TURN REST API that coturn checks
    (`use-auth-secret`), as Synapse makes them: the username is ``<expiry>:<user_id>`` with
    the expiry in Unix seconds, the password base64(HMAC-SHA1(secret, username)).
    """
    lifetime = voip.turn_user_lifetime
    if not voip.turn_uris:
        return {}
    if voip.turn_shared_secret is not None:
        username = f"{int(now + lifetime)}:{user_id}"
        mac = hmac.new(voip.turn_shared_secret.encode(), username.encode(), hashlib.sha1)
        password = base64.b64encode(mac.digest()).decode("ascii")
    elif voip.turn_username is not None and voip.turn_password is not None:
        username, password = voip.turn_username, voip.turn_password
    else:
        return {}
    return {
        "username": username,
        "password": password,
        "ttl": lifetime,
        "uris": list(voip.turn_uris),
    }


class VoipHandler:
    """Answers ``GET /voip/turnServer`` from the ``[voip]`` config."""

    def __init__(self, voip: VoipConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._voip = voip
        self._clock = clock

    def turn_server(self, user_id: str, *, is_guest: bool) -> dict[str, Any]:
        """The TURN servers and credentials for a user.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for guests when ``turn_allow_guests`` is off
                (Synapse).
        """
        if is_guest and not self._voip.turn_allow_guests:
            raise MatrixError("M_FORBIDDEN", "Guest access not allowed")
        return turn_credentials(self._voip, user_id, self._clock())
