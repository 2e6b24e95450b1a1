"""This server's own signing keys: the current one and the old ones it still publishes.

Theory of operation
-------------------
The current key is the key file (`trioserver.keys`, ``signing_key_path``), loaded at start.
Old keys, whose public halves other servers still need to check events this server signed
before a rotation, live in a sidecar file next to it, ``<key file>.old_keys.json``, in the
shape they are published in (``old_verify_keys``)::

    {"ed25519:a_Xb3Q": {"key": "<unpadded base64 public key>", "expired_ts": 1700000000000}}

`rotate_signing_key` (``trioserver rotate-signing-key``) moves the current key there, with
``expired_ts`` the time of the rotation, and writes a new key file; the server signs with the
new key from its next start. Both files are replaced atomically, the sidecar first: a crash
in between leaves the old key current and also listed as old, and loading drops such an
entry. The old private key is not kept.

`OwnKeys.server_keys` is the ``GET /_matrix/key/v2/server`` answer: valid for a day, as
Synapse publishes (its ``key_refresh_interval``), so that other servers see a rotation within
a day; the spec asks origin servers not to publish less than an hour.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from signedjson.key import encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey, VerifyKey

from trioserver.errors import ConfigError
from trioserver.events.jsonutil import is_json_int
from trioserver.federation.keys import (
    KeyResponseError,
    ServerKey,
    decode_verify_key,
    is_valid_key_id,
)
from trioserver.keys import generate_key_file, key_id, load_key_file

# How long the published keys are valid: Synapse's default key_refresh_interval.
PUBLISHED_VALIDITY_MS = 24 * 3600 * 1000
OLD_KEYS_SUFFIX = ".old_keys.json"
# This server's current key verifies whatever it is asked to (it is this server's).
_FOREVER_MS = 2**63 - 1


@attrs.frozen
class OldKey:
    """A key this server signed with before a rotation."""

    key_id: str
    verify_key: VerifyKey = attrs.field(eq=False)
    expired_ts: int


@attrs.frozen
class OwnKeys:
    """This server's signing key and its old verify keys."""

    server_name: str
    signing_key: SigningKey = attrs.field(eq=False)
    old_keys: Mapping[str, OldKey] = attrs.field(factory=dict)

    @property
    def key_id(self) -> str:
        """The current key's id, e.g. ``ed25519:a_Xb3Q``."""
        return key_id(self.signing_key)

    @property
    def verify_key(self) -> VerifyKey:
        """The current key's public half."""
        verify: VerifyKey = get_verify_key(self.signing_key)
        return verify

    def sign(self, signed: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `signed` with this server's signature added (others are kept)."""
        result: dict[str, Any] = sign_json(dict(signed), self.server_name, self.signing_key)
        return result

    def server_keys(self, now_ms: int) -> dict[str, Any]:
        """The signed ``GET /_matrix/key/v2/server`` response at `now_ms`."""
        return self.sign(
            {
                "server_name": self.server_name,
                "verify_keys": {self.key_id: {"key": encode_verify_key_base64(self.verify_key)}},
                "old_verify_keys": old_keys_json(self.old_keys),
                "valid_until_ts": now_ms + PUBLISHED_VALIDITY_MS,
            }
        )

    def server_key(self, wanted_key_id: str) -> ServerKey | None:
        """One of this server's keys, current or old, as a `ServerKey`, or None."""
        if wanted_key_id == self.key_id:
            return ServerKey(self.server_name, wanted_key_id, self.verify_key, _FOREVER_MS)
        old = self.old_keys.get(wanted_key_id)
        if old is None:
            return None
        return ServerKey(
            self.server_name, old.key_id, old.verify_key, old.expired_ts, old.expired_ts
        )


@attrs.frozen
class Rotation:
    """What `rotate_signing_key` did."""

    old_key_id: str
    new_key_id: str
    expired_ts: int
    old_keys_path: Path


def old_keys_path(key_path: Path) -> Path:
    """The sidecar file of old keys next to the key file `key_path`."""
    return key_path.with_name(key_path.name + OLD_KEYS_SUFFIX)


def old_keys_json(old_keys: Mapping[str, OldKey]) -> dict[str, Any]:
    """Old keys as published in ``old_verify_keys`` (and as the sidecar file holds them)."""
    return {
        old.key_id: {"key": encode_verify_key_base64(old.verify_key), "expired_ts": old.expired_ts}
        for old in old_keys.values()
    }


def load_own_keys(server_name: str, key_path: Path) -> OwnKeys:
    """Load the key file and its sidecar of old keys (which may be missing).

    Raises:
        ConfigError: either file is missing (the key file) or malformed.
    """
    signing_key = load_key_file(key_path)
    old_keys = read_old_keys(old_keys_path(key_path))
    # A rotation cut short between its two writes: the current key is not old.
    old_keys.pop(key_id(signing_key), None)
    return OwnKeys(server_name, signing_key, old_keys)


def read_old_keys(path: Path) -> dict[str, OldKey]:
    """The old keys in the sidecar file `path`; none when it does not exist.

    Raises:
        ConfigError: the file is not in the format of the module docstring.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"old signing keys file {path} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"old signing keys file {path} is not a JSON object")
    old_keys = {}
    for old_id, entry in raw.items():
        expired: Any = entry.get("expired_ts") if isinstance(entry, dict) else None
        if not is_valid_key_id(old_id) or not is_json_int(expired):
            raise ConfigError(f"old signing keys file {path}: bad entry {old_id!r}")
        try:
            verify_key = decode_verify_key(old_id, entry.get("key"))
        except KeyResponseError as exc:
            raise ConfigError(f"old signing keys file {path}: {exc}") from None
        old_keys[old_id] = OldKey(old_id, verify_key, int(expired))
    return old_keys


def rotate_signing_key(key_path: Path, *, now_ms: int) -> Rotation:
    """Replace the key file with a new key; keep the current key's public half as old.

    The running server keeps signing with the key it loaded until it restarts.

    Raises:
        ConfigError: the key file or the sidecar cannot be read.
        OSError: the new files cannot be written (nothing is replaced then).
    """
    current = load_key_file(key_path)
    sidecar = old_keys_path(key_path)
    old_keys = read_old_keys(sidecar)
    current_id = key_id(current)
    old_keys[current_id] = OldKey(current_id, get_verify_key(current), now_ms)
    staged = key_path.with_name(key_path.name + ".new")
    new_key = _generate_unused(staged, set(old_keys))
    try:
        _copy_owner(key_path, staged)
        _write_atomically(sidecar, json.dumps(old_keys_json(old_keys), indent=2) + "\n")
        os.replace(staged, key_path)
    finally:
        staged.unlink(missing_ok=True)
    _fsync_dir(key_path.parent)
    return Rotation(current_id, key_id(new_key), now_ms, sidecar)


def _generate_unused(path: Path, used_ids: set[str]) -> SigningKey:
    # A key id names one key for ever: other servers cache keys by id.
    while True:
        path.unlink(missing_ok=True)  # left by a rotation that failed
        new_key = generate_key_file(path)
        if key_id(new_key) not in used_ids:
            with path.open("rb") as stream:
                os.fsync(stream.fileno())  # on disk before it replaces the key file
            return new_key


def _copy_owner(original: Path, new: Path) -> None:
    # Run as root (sudo), the new key file still belongs to the user the server runs as.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        stat = original.stat()
        os.chown(new, stat.st_uid, stat.st_gid)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
