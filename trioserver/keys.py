"""The server's ed25519 signing key, in Synapse's key-file format.

The file holds one line ``ed25519 <key id version> <unpadded base64 seed>``, e.g.
``ed25519 a_Xb3Q <seed>``; events and federation requests are signed with it.
"""

from __future__ import annotations

import os
import secrets
import string
from typing import TYPE_CHECKING

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys

from trioserver.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from signedjson.types import SigningKey


def generate_key_file(path: Path) -> SigningKey:
    """Create a new key file (readable only by its owner) and return the key."""
    version = "a_" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(4)
    )
    key = generate_signing_key(version)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        write_signing_keys(stream, [key])
    return key


def load_key_file(path: Path) -> SigningKey:
    """Read the signing key.

    Raises:
        ConfigError: the file is missing or not a key file.
    """
    try:
        with path.open() as stream:
            keys = read_signing_keys(stream)
    except FileNotFoundError:
        raise ConfigError(f"signing key file {path} does not exist") from None
    except Exception as exc:  # signedjson raises assorted errors for malformed files
        raise ConfigError(f"signing key file {path} is not valid: {exc}") from None
    if not keys:
        raise ConfigError(f"signing key file {path} holds no key")
    key: SigningKey = keys[0]
    return key


def key_id(key: SigningKey) -> str:
    """The key's id as used in signatures, e.g. ``ed25519:a_Xb3Q``."""
    return f"{key.alg}:{key.version}"
