"""Server signing keys: the pure part (Server-Server API, "Retrieving server keys").

Theory of operation
-------------------
A server publishes its keys as a JSON object ``{server_name, verify_keys, old_verify_keys,
valid_until_ts, signatures}`` (`GET /_matrix/key/v2/server`), signed by the keys it lists in
``verify_keys``; a notary hands the same object on with its own signature added
(`POST /_matrix/key/v2/query`). `parse_key_response` checks such an object (shape, server
name, self-signature) and turns it into `ServerKey` records.

When a key verifies (`ServerKey.valid_at`):

- a key of ``verify_keys`` verifies what is dated up to its ``valid_until_ts``, which is the
  lesser of the published value and 7 days after it was fetched (the spec: "Servers MUST use
  the lesser of this field and 7 days into the future", so that a stolen key published with a
  far ``valid_until_ts`` cannot outlive its owner's revocation);
- a key of ``old_verify_keys`` verifies events dated before its ``expired_ts``, never a
  request ("only valid for signing events");
- room versions 1 to 4 ignore ``valid_until_ts`` (any known key verifies their events: they
  are checked at time 0, as Synapse does); v5+ check at the event's ``origin_server_ts``
  (rooms spec, "Signing key validity period").

Pure: no I/O here. `trioserver.federation.keyring` fetches and caches; `own_keys` publishes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.types import VerifyKey
from unpaddedbase64 import decode_base64

from trioserver.events.errors import InvalidEventError
from trioserver.events.identifiers import is_valid_server_name
from trioserver.events.jsonutil import is_json_int
from trioserver.events.validation import check_canonical_json_values

# The spec's cap on how long a fetched key is trusted without asking again.
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
# "The version must have characters matching [a-zA-Z0-9_]"; the only algorithm is ed25519.
_KEY_ID = re.compile(r"ed25519:[A-Za-z0-9_]{1,255}\Z")


class KeyLookupError(Exception):
    """No key of a server could be found that is valid at the time asked: the server and
    every notary failed, or answered without it (the message says which)."""


class SignatureError(Exception):
    """A signature is missing, or does not verify with the signer's key (a key response,
    a signed JSON object, an event)."""


class KeyResponseError(Exception):
    """A key response (of a server or a notary) is malformed or not signed as it must be."""


@attrs.frozen
class ServerKey:
    """A server's verify key and how long it verifies.

    Attributes:
        verify_key: the ed25519 public key (signedjson's, with ``alg`` and ``version``).
        valid_until_ts: ms; what is dated later is not verified by a current key.
        expired_ts: ms; set for an old key (``old_verify_keys``).
    """

    server_name: str
    key_id: str
    verify_key: VerifyKey = attrs.field(eq=False)
    valid_until_ts: int
    expired_ts: int | None = None

    def valid_at(self, ts: int, *, allow_old: bool = True) -> bool:
        """Whether the key verifies something dated `ts` (see the module docstring)."""
        if self.expired_ts is not None:
            return allow_old and ts < self.expired_ts
        return ts <= self.valid_until_ts


@attrs.frozen
class KeyResponse:
    """A checked key response: its keys, and the object itself (to store and hand on)."""

    server_name: str
    keys: tuple[ServerKey, ...]
    valid_until_ts: int
    json: Mapping[str, Any] = attrs.field(eq=False)


def is_valid_key_id(key_id: object) -> bool:
    """Whether `key_id` is an ed25519 key id, e.g. ``ed25519:a_Xb3Q``."""
    return isinstance(key_id, str) and _KEY_ID.match(key_id) is not None


def decode_verify_key(key_id: str, key_base64: object) -> VerifyKey:
    """The signedjson verify key for `key_id` from its unpadded base64.

    Raises:
        KeyResponseError: the key is not base64 of an ed25519 public key.
    """
    if not isinstance(key_base64, str):
        raise KeyResponseError(f"key {key_id} is not a string")
    try:
        return decode_verify_key_bytes(key_id, decode_base64(key_base64))
    except Exception as exc:  # binascii/nacl errors for bad base64 or a wrong length
        raise KeyResponseError(f"key {key_id} is not a valid ed25519 key: {exc}") from None


def check_signature(signed: Mapping[str, Any], signer: str, verify_key: VerifyKey) -> None:
    """Check `signer`'s signature with `verify_key` on a signed JSON object.

    Raises:
        SignatureError: missing or invalid.
    """
    try:
        verify_signed_json(dict(signed), signer, verify_key)
    except SignatureVerifyException as exc:
        raise SignatureError(str(exc)) from None
    except Exception as exc:  # a signature that is not base64, not JSON-encodable content
        raise SignatureError(f"invalid signature of {signer}: {exc}") from None


def signature_key_ids(signed: Mapping[str, Any], signer: str) -> list[str]:
    """The ed25519 key ids `signer` signed `signed` with (ids of other algorithms skipped)."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return []
    by_signer = signatures.get(signer)
    if not isinstance(by_signer, Mapping):
        return []
    return sorted(key_id for key_id in by_signer if is_valid_key_id(key_id))


def parse_key_response(
    response: object, *, expected_server: str | None, fetched_ts: int
) -> KeyResponse:
    """Check a server's key response and read its keys.

    Args:
        response: the parsed JSON, from the server or from a notary's ``server_keys``.
        expected_server: the server asked about; None to take the object's own name (a
            notary's answer about several servers), which must be a valid server name.
        fetched_ts: when it was received (ms): caps ``valid_until_ts`` at 7 days later.

    Raises:
        KeyResponseError: malformed (also: a float or an integer out of canonical JSON's
            range), about another server, or not signed by one of the keys it lists in
            ``verify_keys`` (a listed key's invalid signature also fails).
    """
    if not isinstance(response, Mapping):
        raise KeyResponseError("key response is not a JSON object")
    try:
        # Kept and handed on as it is signed: it must survive a round trip exactly.
        check_canonical_json_values(response)
    except InvalidEventError as exc:
        raise KeyResponseError(f"key response is not canonical JSON: {exc}") from None
    server_name = response.get("server_name")
    if not isinstance(server_name, str) or not is_valid_server_name(server_name):
        raise KeyResponseError("key response has no valid server_name")
    if expected_server is not None and server_name != expected_server:
        raise KeyResponseError(f"key response is for {server_name}, not {expected_server}")
    valid_until: Any = response.get("valid_until_ts")
    if not is_json_int(valid_until):
        raise KeyResponseError(f"key response of {server_name} has no valid_until_ts")
    valid_until_ts = min(int(valid_until), fetched_ts + MAX_KEY_VALIDITY_MS)
    current = _read_keys(server_name, response.get("verify_keys"), "verify_keys", valid_until_ts)
    old = _read_keys(
        server_name, response.get("old_verify_keys", {}), "old_verify_keys", valid_until_ts
    )
    _check_self_signed(response, server_name, {key.key_id: key for key in current})
    # A key listed as both: it is old (the server says it stopped using it).
    old_ids = {key.key_id for key in old}
    keys = tuple(key for key in current if key.key_id not in old_ids) + old
    return KeyResponse(server_name, keys, valid_until_ts, response)


def _read_keys(
    server_name: str, listed: object, field: str, valid_until_ts: int
) -> tuple[ServerKey, ...]:
    if not isinstance(listed, Mapping):
        raise KeyResponseError(f"{field} of {server_name} is not an object")
    keys = []
    for key_id, entry in listed.items():
        if not is_valid_key_id(key_id):
            continue  # another algorithm, or an id no signature of ours could name
        if not isinstance(entry, Mapping):
            raise KeyResponseError(f"{field}.{key_id} of {server_name} is not an object")
        expired_ts = None
        if field == "old_verify_keys":
            expired: Any = entry.get("expired_ts")
            if not is_json_int(expired):
                raise KeyResponseError(f"old key {key_id} of {server_name} has no expired_ts")
            expired_ts = int(expired)
        verify_key = decode_verify_key(key_id, entry.get("key"))
        keys.append(ServerKey(server_name, key_id, verify_key, valid_until_ts, expired_ts))
    return tuple(keys)


def _check_self_signed(
    response: Mapping[str, Any], server_name: str, current: Mapping[str, ServerKey]
) -> None:
    listed = [key_id for key_id in signature_key_ids(response, server_name) if key_id in current]
    if not listed:
        raise KeyResponseError(f"key response of {server_name} is not signed by a key it lists")
    for key_id in listed:
        try:
            check_signature(response, server_name, current[key_id].verify_key)
        except SignatureError as exc:
            raise KeyResponseError(f"key response of {server_name}: {exc}") from None
