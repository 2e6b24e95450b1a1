"""``X-Matrix`` request authentication (Server-Server API, "Request Authentication").

An outbound request is signed by this server: the JSON object ``{method, uri, origin,
destination[, content]}`` is signed with the server's key and the signature travels in an
``Authorization: X-Matrix origin=...,destination=...,key=...,sig=...`` header. An inbound
request is checked the other way round: the header is parsed, the same object rebuilt from
the request as received, and the signature verified with the origin's key (looked up by the
caller: `trioserver.federation.keys`).

Pure: no I/O here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from signedjson.types import SigningKey, VerifyKey


@attrs.frozen
class XMatrixAuth:
    """A parsed ``X-Matrix`` header."""

    origin: str
    destination: str | None
    key_id: str
    signature: str


def signed_request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object an X-Matrix signature covers (`content` None: a request without a body)."""
    request: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        request["content"] = content
    return request


def authorization_header(
    *,
    method: str,
    uri: str,
    origin: str,
    destination: str,
    signing_key: SigningKey,
    content: Any = None,
) -> str:
    """The ``Authorization`` header value for an outbound request.

    Args:
        uri: the path and query exactly as sent (percent-encoded), e.g.
            ``/_matrix/federation/v1/send/1234``.
        content: the JSON body, or None when there is none.
    """
    signed = sign_json(
        signed_request_json(method, uri, origin, destination, content), origin, signing_key
    )
    key_id = f"{signing_key.alg}:{signing_key.version}"
    signature = signed["signatures"][origin][key_id]
    return (
        f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{signature}"'
    )


# One `name=value` pair of the header; the value quoted (with backslash escapes) or bare.
_PARAM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def _unauthorized(message: str) -> MatrixError:
    return MatrixError("M_UNAUTHORIZED", message, status=401)


def parse_authorization(header: str | None) -> XMatrixAuth:
    """Parse an ``X-Matrix`` Authorization header.

    Raises:
        MatrixError: 401 ``M_UNAUTHORIZED`` when it is missing or malformed.
    """
    if header is None:
        raise _unauthorized("Missing Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme != "X-Matrix":
        raise _unauthorized("Authorization header is not X-Matrix")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise _unauthorized("Malformed X-Matrix header")
        name = match.group(1).lower()
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[name] = value
        position = match.end()
    origin, key, sig = params.get("origin"), params.get("key"), params.get("sig")
    if not origin or not key or not sig:
        raise _unauthorized("X-Matrix header needs origin, key and sig")
    return XMatrixAuth(origin, params.get("destination"), key, sig)


def verify_request(
    auth: XMatrixAuth,
    *,
    method: str,
    uri: str,
    destination: str,
    content: Any,
    verify_key: VerifyKey,
) -> None:
    """Check an inbound request's signature with the origin's key `verify_key`.

    Raises:
        MatrixError: 401 ``M_UNAUTHORIZED`` when the signature does not verify, or the header
            names another destination.
    """
    if auth.destination is not None and auth.destination != destination:
        raise _unauthorized(f"Request is for {auth.destination}, not this server")
    signed = signed_request_json(method, uri, auth.origin, destination, content)
    signed["signatures"] = {auth.origin: {auth.key_id: auth.signature}}
    try:
        verify_signed_json(signed, auth.origin, verify_key)
    except SignatureVerifyException:
        raise _unauthorized("Invalid request signature") from None
    except Exception:  # a signature that is not base64, of the wrong length, ...
        raise _unauthorized("Invalid request signature") from None
