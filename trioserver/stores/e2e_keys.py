"""Device keys, one-time keys and fallback keys.

Theory of operation
-------------------
Keys belong to a device in the ``devices`` table; every read joins it, so keys of a deleted
device are never served even before `delete_keys_of_missing_devices` has removed them. An
upload is one transaction: device keys (a change writes a device_lists row), one-time keys
(a key id may be re-uploaded only with the same key) and fallback keys (one per algorithm;
re-uploading the current one keeps its ``used`` flag, as Synapse does). Claims take the oldest
one-time key, else the fallback key, which is marked used but kept (client-server API,
"One-time and fallback keys").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from canonicaljson import encode_canonical_json

from trioserver.stores.device_lists import record_change_txn

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn
    from trioserver.streams import StreamIdGenerator

JsonDict = dict[str, Any]
# Synapse always reports this count, so clients see 0 rather than nothing.
DEFAULT_OTK_ALGORITHM = "signed_curve25519"


class OneTimeKeyConflictError(Exception):
    """An uploaded one-time key id exists with a different key."""

    def __init__(self, name: str) -> None:
        super().__init__(f"One time key {name} already exists")
        self.name = name


@attrs.frozen
class UploadedKey:
    """A one-time or fallback key to store."""

    algorithm: str
    key_id: str
    key: Any  # a key string or a KeyObject


@attrs.frozen
class KeyUpload:
    """One ``/keys/upload`` request."""

    user_id: str
    device_id: str
    device_keys: JsonDict | None
    one_time_keys: Sequence[UploadedKey]
    fallback_keys: Sequence[UploadedKey]
    now_ms: int


@attrs.frozen
class UploadOutcome:
    """What an upload changed."""

    one_time_key_counts: dict[str, int]
    device_keys_changed: bool


def _canonical(value: Any) -> str:
    return encode_canonical_json(value).decode()


def _device_exists_txn(txn: Txn, user_id: str, device_id: str) -> bool:
    row = txn.execute(
        "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    ).fetchone()
    return row is not None


def _set_device_keys_txn(txn: Txn, ids: StreamIdGenerator, upload: KeyUpload) -> bool:
    assert upload.device_keys is not None
    new_json = _canonical(upload.device_keys)
    key = (upload.user_id, upload.device_id)
    row = txn.execute(
        "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", key
    ).fetchone()
    if row is not None and row[0] == new_json:
        return False
    txn.execute(
        "INSERT INTO e2e_device_keys (user_id, device_id, ts_added_ms, key_json)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO UPDATE SET"
        " ts_added_ms = excluded.ts_added_ms, key_json = excluded.key_json",
        (*key, upload.now_ms, new_json),
    )
    # Signatures of the old keys do not sign the new ones.
    txn.execute(
        "DELETE FROM e2e_cross_signing_signatures"
        " WHERE target_user_id = ? AND target_device_id = ?",
        key,
    )
    record_change_txn(txn, ids.next_id(), [upload.user_id])
    return True


def _add_one_time_keys_txn(txn: Txn, upload: KeyUpload) -> None:
    for otk in upload.one_time_keys:
        params = (upload.user_id, upload.device_id, otk.algorithm, otk.key_id)
        row = txn.execute(
            "SELECT key_json FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
            params,
        ).fetchone()
        if row is not None:
            if not _same_key(orjson.loads(row[0]), otk.key):
                raise OneTimeKeyConflictError(f"{otk.algorithm}:{otk.key_id}")
            continue
        txn.execute(
            "INSERT INTO e2e_one_time_keys"
            " (user_id, device_id, algorithm, key_id, ts_added_ms, key_json)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*params, upload.now_ms, _canonical(otk.key)),
        )


def _same_key(old: Any, new: Any) -> bool:
    # Re-uploads may carry other signatures (Synapse compares without them).
    if not isinstance(old, dict) or not isinstance(new, dict):
        return bool(old == new)
    return {k: v for k, v in old.items() if k != "signatures"} == {
        k: v for k, v in new.items() if k != "signatures"
    }


def _set_fallback_keys_txn(txn: Txn, upload: KeyUpload) -> None:
    for key in upload.fallback_keys:
        new_json = _canonical(key.key)
        # Re-uploading the current key changes nothing (and so does not reset `used`).
        txn.execute(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
            " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
            " SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0"
            " WHERE e2e_fallback_keys.key_id != excluded.key_id"
            " OR e2e_fallback_keys.key_json != excluded.key_json",
            (upload.user_id, upload.device_id, key.algorithm, key.key_id, new_json),
        )


def _counts_txn(txn: Txn, user_id: str, device_id: str) -> dict[str, int]:
    rows = txn.execute(
        "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys"
        " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
        (user_id, device_id),
    ).fetchall()
    counts = {DEFAULT_OTK_ALGORITHM: 0}
    counts.update({str(algorithm): int(count) for algorithm, count in rows})
    return counts


def _upload_txn(txn: Txn, ids: StreamIdGenerator, upload: KeyUpload) -> UploadOutcome:
    if not _device_exists_txn(txn, upload.user_id, upload.device_id):
        # The device was deleted while the request was in flight: keep nothing for it.
        return UploadOutcome({DEFAULT_OTK_ALGORITHM: 0}, False)
    changed = upload.device_keys is not None and _set_device_keys_txn(txn, ids, upload)
    _add_one_time_keys_txn(txn, upload)
    _set_fallback_keys_txn(txn, upload)
    return UploadOutcome(_counts_txn(txn, upload.user_id, upload.device_id), changed)


def _unused_fallback_txn(txn: Txn, user_id: str, device_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT algorithm FROM e2e_fallback_keys"
        " WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
        (user_id, device_id),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _claim_one_txn(txn: Txn, user_id: str, device_id: str, algorithm: str) -> JsonDict | None:
    if not _device_exists_txn(txn, user_id, device_id):
        return None
    params = (user_id, device_id, algorithm)
    row = txn.execute(
        "SELECT key_id, key_json FROM e2e_one_time_keys"
        " WHERE user_id = ? AND device_id = ? AND algorithm = ?"
        " ORDER BY ts_added_ms, key_id LIMIT 1",
        params,
    ).fetchone()
    if row is not None:
        txn.execute(
            "DELETE FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
            (*params, row[0]),
        )
        return {f"{algorithm}:{row[0]}": orjson.loads(row[1])}
    row = txn.execute(
        "SELECT key_id, key_json FROM e2e_fallback_keys"
        " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
        params,
    ).fetchone()
    if row is None:
        return None
    txn.execute(
        "UPDATE e2e_fallback_keys SET used = 1"
        " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
        params,
    )
    return {f"{algorithm}:{row[0]}": orjson.loads(row[1])}


def _claim_txn(txn: Txn, claims: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, JsonDict]]:
    result: dict[str, dict[str, JsonDict]] = {}
    for user_id, device_id, algorithm in claims:
        claimed = _claim_one_txn(txn, user_id, device_id, algorithm)
        if claimed is not None:
            result.setdefault(user_id, {})[device_id] = claimed
    return result


def _owner_signatures_txn(txn: Txn, user_id: str, device_id: str) -> dict[str, str]:
    # Only the owner's own signatures of a device (made with their self-signing key) are
    # visible to others (spec: "Key and signature security").
    rows = txn.execute(
        "SELECT key_id, signature FROM e2e_cross_signing_signatures"
        " WHERE target_user_id = ? AND target_device_id = ? AND user_id = ?",
        (user_id, device_id, user_id),
    ).fetchall()
    return {str(key_id): str(signature) for key_id, signature in rows}


def _query_txn(
    txn: Txn, query: Sequence[tuple[str, str | None]]
) -> dict[str, dict[str, JsonDict]]:
    result: dict[str, dict[str, JsonDict]] = {}
    for user_id, device_id in query:
        sql = (
            "SELECT k.device_id, d.display_name, k.key_json FROM e2e_device_keys AS k"
            " JOIN devices AS d ON d.user_id = k.user_id AND d.device_id = k.device_id"
            " WHERE k.user_id = ?"
        )
        params: list[str] = [user_id]
        if device_id is not None:
            sql += " AND k.device_id = ?"
            params.append(device_id)
        for found_device, display_name, key_json in txn.execute(sql, params).fetchall():
            keys: JsonDict = orjson.loads(key_json)
            extra = _owner_signatures_txn(txn, user_id, found_device)
            if extra:
                signatures = keys.setdefault("signatures", {})
                signatures.setdefault(user_id, {}).update(extra)
            unsigned = {} if display_name is None else {"device_display_name": display_name}
            keys["unsigned"] = unsigned
            result.setdefault(user_id, {})[found_device] = keys
    return result


def _delete_missing_devices_txn(txn: Txn, ids: StreamIdGenerator, user_id: str) -> int:
    gone = [
        row[0]
        for row in txn.execute(
            "SELECT device_id FROM e2e_device_keys WHERE user_id = ? AND device_id NOT IN"
            " (SELECT device_id FROM devices WHERE user_id = ?)",
            (user_id, user_id),
        ).fetchall()
    ]
    txn.executemany(
        "DELETE FROM e2e_cross_signing_signatures"
        " WHERE target_user_id = ? AND target_device_id = ?",
        [(user_id, device_id) for device_id in gone],
    )
    for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
        txn.execute(
            f"DELETE FROM {table} WHERE user_id = ? AND device_id NOT IN"
            " (SELECT device_id FROM devices WHERE user_id = ?)",
            (user_id, user_id),
        )
    stream_id = ids.next_id()
    record_change_txn(txn, stream_id, [user_id])
    return stream_id


class E2eKeyStore:
    """Device, one-time and fallback keys (written by the device_lists stream's writer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upload(self, ids: StreamIdGenerator, upload: KeyUpload) -> UploadOutcome:
        """Store a device's uploaded keys in one transaction.

        Args:
            ids: the device_lists id generator (used when the device keys change).
            upload: the keys.

        Returns:
            The device's one-time key counts after the upload, and whether its device keys
            changed.

        Raises:
            OneTimeKeyConflictError: a one-time key id exists with another key (nothing is
                stored then).

        Checkpoint: yes.
        """
        return await self._db.run_txn("upload_e2e_keys", _upload_txn, ids, upload)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm (``signed_curve25519`` always present).

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "count_one_time_keys", _counts_txn, user_id, device_id
        )

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """Algorithms whose fallback key has not been claimed. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "unused_fallback_key_types", _unused_fallback_txn, user_id, device_id
        )

    async def claim(
        self, claims: Sequence[tuple[str, str, str]]
    ) -> dict[str, dict[str, JsonDict]]:
        """Claim one key per (user, device, algorithm): the oldest one-time key (deleted),
        else the fallback key (marked used).

        Returns:
            user id -> device id -> ``<algorithm>:<key_id>`` -> key, for what was found.

        Checkpoint: yes.
        """
        return await self._db.run_txn("claim_e2e_keys", _claim_txn, claims)

    async def device_keys(
        self, query: Sequence[tuple[str, str | None]]
    ) -> dict[str, dict[str, JsonDict]]:
        """Device keys of existing devices, as ``/keys/query`` returns them (with the owner's
        cross-signing signatures merged and ``unsigned.device_display_name``).

        Args:
            query: (user id, device id or None for all of the user's devices).

        Checkpoint: yes.
        """
        return await self._db.run_read("query_device_keys", _query_txn, query)

    async def delete_keys_of_missing_devices(self, ids: StreamIdGenerator, user_id: str) -> int:
        """Drop keys of the user's deleted devices and record a device-list change.

        Returns:
            The device_lists stream id of the change. Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_keys_of_missing_devices", _delete_missing_devices_txn, ids, user_id
        )
