"""Authenticating inbound Server-Server requests (spec "Request Authentication").

`RequestAuthenticator` is the `trioserver.api.http.ServerAuthenticator` of routes with
``auth="federation"``: it parses the ``X-Matrix`` header, refuses origins outside the
``domain_whitelist``, rebuilds the signed object from the request as received (the raw path
and query string, the parsed JSON body) and checks its signature with the origin's key, a
current key valid now (old keys only verify events). Failures are Matrix errors: 401
``M_UNAUTHORIZED`` for anything about the signature, 403 ``M_FORBIDDEN`` for an origin not
allowed, 400 ``M_NOT_JSON`` for a body that is not JSON.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from trioserver.errors import MatrixError
from trioserver.events.identifiers import is_valid_server_name
from trioserver.federation.keys import KeyLookupError
from trioserver.federation.request_auth import parse_authorization, verify_request

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.api.http import Request
    from trioserver.federation.keyring import KeyRing


class RequestAuthenticator:
    """Verifies X-Matrix signatures of requests to this server.

    Args:
        server_name: this server's name, the only destination accepted.
        domain_whitelist: the only origins allowed (None: any).
        clock: wall-clock time in seconds (the key must be valid now).
    """

    def __init__(
        self,
        keyring: KeyRing,
        server_name: str,
        domain_whitelist: Sequence[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._server_name = server_name
        self._whitelist = None if domain_whitelist is None else frozenset(domain_whitelist)
        self._clock = clock

    async def __call__(self, request: Request) -> str:
        """The verified origin of `request`.

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED``, 403 ``M_FORBIDDEN`` or 400 ``M_NOT_JSON``.

        Checkpoint: yes.
        """
        auth = parse_authorization(request.headers.get("authorization"))
        if not is_valid_server_name(auth.origin):
            # A malformed request (Synapse: 400), not a failed signature.
            raise MatrixError("M_INVALID_PARAM", "X-Matrix origin is not a valid server name")
        if auth.destination is not None and auth.destination != self._server_name:
            raise _unauthorized(f"Request is for {auth.destination}, not this server")
        if self._whitelist is not None and auth.origin not in self._whitelist:
            # Before any key is fetched: a server not allowed is not contacted either.
            raise MatrixError(
                "M_FORBIDDEN", f"Federation with {auth.origin} is not allowed", status=403
            )
        content = _content(request.body)
        try:
            verify_key = await self._keyring.verify_key(
                auth.origin, auth.key_id, at_ts=int(self._clock() * 1000), allow_old=False
            )
        except KeyLookupError as exc:
            raise _unauthorized(f"Failed to find a key to verify the request: {exc}") from None
        uri = request.path + ("?" + request.raw_query if request.raw_query else "")
        verify_request(
            auth,
            method=request.method,
            uri=uri,
            destination=self._server_name,
            content=content,
            verify_key=verify_key,
        )
        return auth.origin


def _content(body: bytes) -> Any:
    # Spec: "content": the JSON-parsed request body; a request without one signs none.
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MatrixError("M_NOT_JSON", "Content not JSON.") from None


def _unauthorized(message: str) -> MatrixError:
    return MatrixError("M_UNAUTHORIZED", message, status=401)
