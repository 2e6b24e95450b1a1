"""Checking the shapes and signatures of end-to-end encryption keys (pure, no I/O).

Shapes follow the client-server API definitions ``DeviceKeys``, ``OneTimeKeys`` (KeyObject)
and ``CrossSigningKey``. Shape errors are 400 ``M_BAD_JSON`` for ``/keys/upload`` bodies (as
Synapse answers) and ``M_INVALID_PARAM`` for cross-signing keys; a signature that does not
verify is 400 ``M_INVALID_SIGNATURE`` (spec: ``POST /keys/device_signing/upload``).
"""

from __future__ import annotations

import binascii
from typing import Any

import attrs
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.types import VerifyKey
from unpaddedbase64 import decode_base64

from trioserver.errors import MatrixError

JsonDict = dict[str, Any]
KEY_TYPES = ("master", "self_signing", "user_signing")
# The request body field of each cross-signing key type.
BODY_FIELDS = {
    "master": "master_key",
    "self_signing": "self_signing_key",
    "user_signing": "user_signing_key",
}


def _bad(message: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", message)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def is_signatures(value: Any) -> bool:
    """Whether `value` has the ``signatures`` shape: user id -> key id -> signature."""
    return isinstance(value, dict) and all(_is_str_map(v) for v in value.values())


def check_device_keys(value: Any, user_id: str, device_id: str) -> JsonDict:
    """The ``device_keys`` of a ``/keys/upload`` body, checked against the uploader.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a wrong shape, or keys of another user or device.
    """
    if not isinstance(value, dict):
        raise _bad("'device_keys' must be an object")
    if not isinstance(value.get("user_id"), str) or not isinstance(value.get("device_id"), str):
        raise _bad("'device_keys' needs 'user_id' and 'device_id' strings")
    if value["user_id"] != user_id:
        raise _bad("'user_id' in 'device_keys' does not match the authenticated user")
    if value["device_id"] != device_id:
        raise _bad("'device_id' in 'device_keys' does not match the authenticated device")
    algorithms = value.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise _bad("'algorithms' in 'device_keys' must be an array of strings")
    if not _is_str_map(value.get("keys")):
        raise _bad("'keys' in 'device_keys' must be an object of strings")
    if not is_signatures(value.get("signatures")):
        raise _bad("'signatures' in 'device_keys' must map user ids to objects of strings")
    return value


@attrs.frozen
class OneTimeKey:
    """A one-time or fallback key from an upload."""

    algorithm: str
    key_id: str
    key: str | JsonDict  # a bare key string, or a signed KeyObject


def check_key_map(value: Any, field: str) -> list[OneTimeKey]:
    """The ``one_time_keys`` or ``fallback_keys`` of an upload: ``<algorithm>:<key_id>`` to a
    key string or a KeyObject (``key`` and ``signatures``).

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a wrong shape.
    """
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _bad(f"'{field}' must be an object")
    keys: list[OneTimeKey] = []
    for name, key in value.items():
        algorithm, sep, key_id = name.partition(":")
        if not sep or not algorithm or not key_id or ":" in key_id:
            raise _bad(f"Invalid {field} key {name!r}: expected '<algorithm>:<key_id>'")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str) or not is_signatures(key.get("signatures")):
                raise _bad(f"Key {name!r} in '{field}' needs 'key' and 'signatures'")
        elif not isinstance(key, str):
            raise _bad(f"Key {name!r} in '{field}' must be a string or an object")
        keys.append(OneTimeKey(algorithm, key_id, key))
    return keys


@attrs.frozen
class CrossSigningKey:
    """A checked cross-signing key.

    Attributes:
        key_type: ``master``, ``self_signing`` or ``user_signing``.
        key: the key object as uploaded.
        key_id: its one key's name, ``ed25519:<public key>``.
        public_key: the unpadded base64 public key (signatures name it like a device id).
        verify_key: for checking signatures made with it.
    """

    key_type: str
    key: JsonDict
    key_id: str
    public_key: str
    verify_key: VerifyKey


def parse_cross_signing_key(value: Any, user_id: str, key_type: str) -> CrossSigningKey:
    """Check a cross-signing key's shape and that it belongs to `user_id` with `key_type`.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM``.
    """
    invalid = MatrixError("M_INVALID_PARAM", f"Invalid {key_type} key")
    if not isinstance(value, dict) or value.get("user_id") != user_id:
        raise invalid
    usage, keys = value.get("usage"), value.get("keys")
    if not isinstance(usage, list) or key_type not in usage:
        raise invalid
    if not isinstance(keys, dict) or not _is_str_map(keys) or len(keys) != 1:
        raise invalid
    if "signatures" in value and not is_signatures(value["signatures"]):
        raise invalid
    ((key_id, public_key),) = keys.items()
    return CrossSigningKey(key_type, value, key_id, public_key, _verify_key(key_id, public_key))


def _verify_key(key_id: str, public_key: str) -> VerifyKey:
    algorithm, _, version = key_id.partition(":")
    try:
        if algorithm != "ed25519" or not version:
            raise ValueError(key_id)
        return decode_verify_key_bytes(key_id, decode_base64(public_key))
    except (ValueError, binascii.Error):
        raise MatrixError("M_INVALID_PARAM", f"Invalid key {key_id!r}") from None


def device_verify_key(device_keys: JsonDict, key_id: str) -> VerifyKey | None:
    """The verify key named `key_id` (``ed25519:<device id>``) in stored device keys."""
    public_key = device_keys.get("keys", {}).get(key_id)
    if not isinstance(public_key, str):
        return None
    try:
        return _verify_key(key_id, public_key)
    except MatrixError:
        return None


def check_signature(signed: JsonDict, signer: str, verify_key: VerifyKey) -> None:
    """Check `signer`'s signature on `signed` with `verify_key`.

    Raises:
        MatrixError: 400 ``M_INVALID_SIGNATURE``.
    """
    try:
        verify_signed_json(signed, signer, verify_key)
    except (SignatureVerifyException, ValueError, binascii.Error, TypeError):
        raise MatrixError("M_INVALID_SIGNATURE", "Invalid signature") from None


def matches_stored(signed: JsonDict, stored: JsonDict) -> bool:
    """Whether an uploaded signed object is the stored one, apart from signatures."""
    ignored = ("signatures", "unsigned")
    return {k: v for k, v in signed.items() if k not in ignored} == {
        k: v for k, v in stored.items() if k not in ignored
    }
