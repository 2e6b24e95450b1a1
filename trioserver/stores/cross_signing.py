"""Cross-signing keys and the signatures uploaded through ``/keys/signatures/upload``.

Theory of operation
-------------------
A user has at most one key of each type (``master``, ``self_signing``, ``user_signing``);
uploading one replaces the previous. Signatures are stored apart from the signed objects and
merged in when keys are read, filtered by who may see them (client-server API, "Key and
signature security"): a reader sees signatures made by themselves and signatures a user made
of their own keys, never signatures other users made with their user-signing keys.

Writes record device_lists rows in the same transaction: master and self-signing keys and a
user's signatures of their own keys concern everyone sharing a room with them; user-signing
keys and signatures of other users' keys concern only the signer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson
from canonicaljson import encode_canonical_json

from trioserver.stores.device_lists import record_change_txn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn
    from trioserver.streams import StreamIdGenerator

JsonDict = dict[str, Any]


class KeyIdInUseError(Exception):
    """A cross-signing public key equals one of the user's device ids."""


@attrs.frozen
class StoredCrossSigningKey:
    """A user's cross-signing key as stored (without separately uploaded signatures)."""

    user_id: str
    key_type: str
    public_key: str
    key: JsonDict


@attrs.frozen
class NewCrossSigningKey:
    """A checked key to store."""

    key_type: str
    public_key: str
    key: JsonDict


@attrs.frozen
class NewSignature:
    """A checked signature of a device or cross-signing key.

    Attributes:
        key_id: the signing key, ``ed25519:<public key or device id>``.
        target_user_id: whose key was signed.
        target_device_id: the device id, or the public key of the cross-signing key, signed.
        signature: the unpadded base64 signature.
    """

    key_id: str
    target_user_id: str
    target_device_id: str
    signature: str


@attrs.frozen
class ChangeRecord:
    """Who a write must be announced to: `user_ids` to everyone sharing a room, and
    `private_user_ids` only to `signer`."""

    stream_id: int | None
    user_ids: frozenset[str]
    private_user_ids: frozenset[str]
    signer: str


def _get_keys_txn(
    txn: Txn, user_ids: Sequence[str]
) -> dict[str, dict[str, StoredCrossSigningKey]]:
    result: dict[str, dict[str, StoredCrossSigningKey]] = {}
    for user_id in dict.fromkeys(user_ids):
        rows = txn.execute(
            "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = ?",
            (user_id,),
        ).fetchall()
        for key_type, public_key, key_json in rows:
            stored = StoredCrossSigningKey(user_id, key_type, public_key, orjson.loads(key_json))
            result.setdefault(user_id, {})[key_type] = stored
    return result


def _visible_signatures_txn(
    txn: Txn, target_user_id: str, target_device_id: str, reader: str
) -> list[tuple[str, str, str]]:
    rows = txn.execute(
        "SELECT user_id, key_id, signature FROM e2e_cross_signing_signatures"
        " WHERE target_user_id = ? AND target_device_id = ? AND (user_id = ? OR user_id = ?)",
        (target_user_id, target_device_id, reader, target_user_id),
    ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def _keys_for_reader_txn(
    txn: Txn, user_ids: Sequence[str], reader: str
) -> dict[str, dict[str, JsonDict]]:
    result: dict[str, dict[str, JsonDict]] = {}
    for user_id, by_type in _get_keys_txn(txn, user_ids).items():
        for key_type, stored in by_type.items():
            key = stored.key
            for signer, key_id, signature in _visible_signatures_txn(
                txn, user_id, stored.public_key, reader
            ):
                key.setdefault("signatures", {}).setdefault(signer, {})[key_id] = signature
            result.setdefault(user_id, {})[key_type] = key
    return result


def _set_keys_txn(
    txn: Txn, ids: StreamIdGenerator, user_id: str, keys: Sequence[NewCrossSigningKey]
) -> ChangeRecord:
    for key in keys:
        # Spec ("Cross-signing"): servers must keep device ids and cross-signing public keys
        # apart, because signatures name both the same way.
        clash = txn.execute(
            "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?",
            (user_id, key.public_key),
        ).fetchone()
        if clash is not None:
            raise KeyIdInUseError(key.public_key)
    stream_id = ids.next_id()
    for key in keys:
        txn.execute(
            "INSERT INTO e2e_cross_signing_keys"
            " (user_id, key_type, public_key, key_json, stream_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key,"
            " key_json = excluded.key_json, stream_id = excluded.stream_id",
            (
                user_id,
                key.key_type,
                key.public_key,
                encode_canonical_json(key.key).decode(),
                stream_id,
            ),
        )
    public = any(key.key_type != "user_signing" for key in keys)
    private = any(key.key_type == "user_signing" for key in keys)
    if public:
        record_change_txn(txn, stream_id, [user_id])
    elif private:
        record_change_txn(txn, stream_id, [user_id], only_for=user_id)
    return ChangeRecord(
        stream_id,
        frozenset([user_id]) if public else frozenset(),
        frozenset([user_id]) if private and not public else frozenset(),
        user_id,
    )


def _add_signatures_txn(
    txn: Txn, ids: StreamIdGenerator, signer: str, signatures: Sequence[NewSignature]
) -> ChangeRecord:
    if not signatures:
        return ChangeRecord(None, frozenset(), frozenset(), signer)
    txn.executemany(
        "INSERT INTO e2e_cross_signing_signatures"
        " (user_id, key_id, target_user_id, target_device_id, signature) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (target_user_id, target_device_id, user_id, key_id)"
        " DO UPDATE SET signature = excluded.signature",
        [
            (signer, s.key_id, s.target_user_id, s.target_device_id, s.signature)
            for s in signatures
        ],
    )
    own = frozenset(s.target_user_id for s in signatures if s.target_user_id == signer)
    others = frozenset(s.target_user_id for s in signatures if s.target_user_id != signer)
    stream_id = ids.next_id()
    record_change_txn(txn, stream_id, own)
    record_change_txn(txn, stream_id, others, only_for=signer)
    return ChangeRecord(stream_id, own, others, signer)


class CrossSigningStore:
    """Cross-signing keys and signatures (written by the device_lists stream's writer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def keys(self, user_ids: Sequence[str]) -> dict[str, dict[str, StoredCrossSigningKey]]:
        """Users' stored cross-signing keys by type (users without keys are absent).

        Checkpoint: yes.
        """
        return await self._db.run_read_inline("get_cross_signing_keys", _get_keys_txn, user_ids)

    async def keys_for_reader(
        self, user_ids: Sequence[str], reader: str
    ) -> dict[str, dict[str, JsonDict]]:
        """Users' cross-signing keys by type, with the signatures `reader` may see merged in.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "get_cross_signing_keys_for_reader", _keys_for_reader_txn, user_ids, reader
        )

    async def set_keys(
        self, ids: StreamIdGenerator, user_id: str, keys: Sequence[NewCrossSigningKey]
    ) -> ChangeRecord:
        """Store (replace) some of a user's cross-signing keys and record the change.

        Raises:
            KeyIdInUseError: a public key equals one of the user's device ids (nothing is
                stored then).

        Checkpoint: yes.
        """
        return await self._db.run_txn("set_cross_signing_keys", _set_keys_txn, ids, user_id, keys)

    async def add_signatures(
        self, ids: StreamIdGenerator, signer: str, signatures: Sequence[NewSignature]
    ) -> ChangeRecord:
        """Store checked signatures made by `signer` and record the change. Checkpoint: yes."""
        return await self._db.run_txn(
            "add_cross_signing_signatures", _add_signatures_txn, ids, signer, signatures
        )
