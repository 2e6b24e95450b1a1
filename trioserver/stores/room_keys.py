"""Server-side key backups: per-user backup versions and the room keys stored in them.

Theory of operation
-------------------
A user's versions are numbered 1, 2, ... (``MAX(version) + 1`` over all their rows, deleted
ones included, so a number is never reused). The *current* version is the highest one not
deleted; only it accepts uploads (spec "Server-side key backups": clients must not write to a
stale backup). Deleting a version flags its row and drops its keys.

Each version has an ``etag`` counter, bumped in the same transaction as any change to its
keys, so that a client can tell whether another client has changed the backup. An upload is
one transaction: it checks that the version is current, merges every key with one
``executemany`` upsert, and bumps the etag only when a row really changed.

The merge rule for a session already in the backup is the spec's: keep the key with
``is_verified`` true; if equal, the lower ``first_message_index``; if equal, the lower
``forwarded_count``; a key that is no better is ignored. It is a single row-value comparison
in the upsert's ``WHERE``.

JSON payloads (``auth_data``, ``session_data``) are opaque and stored as text; reads hand
the text back so that it can be sent on without being parsed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn


# How `RoomKeyStore.update_auth_data` went.
UpdateResult = Literal["updated", "no_such_version", "wrong_algorithm"]


@attrs.frozen
class BackupVersion:
    """One backup version's metadata (``auth_data_json`` is JSON text)."""

    version: int
    algorithm: str
    auth_data_json: str
    etag: int
    count: int


@attrs.frozen
class RoomKey:
    """One backed-up session key (the spec's ``KeyBackupData``; ``session_data_json`` is JSON
    text)."""

    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data_json: str


KeyWriteOutcome = Literal["ok", "no_such_version", "not_current"]


@attrs.frozen
class KeyWriteResult:
    """What a change to a version's keys did.

    Attributes:
        outcome: ``ok``; ``no_such_version`` (unknown or deleted); ``not_current`` (an upload
            to an existing version that is no longer the newest).
        current_version: the user's current version (None when they have none).
        count: the number of keys in the version afterwards (0 unless ``ok``).
        etag: the version's etag afterwards (0 unless ``ok``).
    """

    outcome: KeyWriteOutcome
    current_version: int | None
    count: int = 0
    etag: int = 0


def _current_version_txn(txn: Txn, user_id: str) -> int | None:
    row = txn.execute(
        "SELECT MAX(version) FROM room_key_versions WHERE user_id = ? AND deleted = 0",
        (user_id,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _count_keys_txn(txn: Txn, user_id: str, version: int) -> int:
    row = txn.execute(
        "SELECT COUNT(*) FROM room_keys WHERE user_id = ? AND version = ?", (user_id, version)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _etag_txn(txn: Txn, user_id: str, version: int) -> int | None:
    # The etag of a live (not deleted) version, or None.
    row = txn.execute(
        "SELECT etag FROM room_key_versions WHERE user_id = ? AND version = ? AND deleted = 0",
        (user_id, version),
    ).fetchone()
    return None if row is None else int(row[0])


def _bump_etag_txn(txn: Txn, user_id: str, version: int) -> None:
    txn.execute(
        "UPDATE room_key_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
        (user_id, version),
    )


def _create_version_txn(txn: Txn, user_id: str, algorithm: str, auth_data_json: str) -> int:
    row = txn.execute(
        "SELECT COALESCE(MAX(version), 0) FROM room_key_versions WHERE user_id = ?", (user_id,)
    ).fetchone()
    assert row is not None
    version = int(row[0]) + 1
    txn.execute(
        "INSERT INTO room_key_versions (user_id, version, algorithm, auth_data)"
        " VALUES (?, ?, ?, ?)",
        (user_id, version, algorithm, auth_data_json),
    )
    return version


def _get_version_txn(txn: Txn, user_id: str, version: int | None) -> BackupVersion | None:
    if version is None:
        version = _current_version_txn(txn, user_id)
        if version is None:
            return None
    row = txn.execute(
        "SELECT algorithm, auth_data, etag FROM room_key_versions"
        " WHERE user_id = ? AND version = ? AND deleted = 0",
        (user_id, version),
    ).fetchone()
    if row is None:
        return None
    algorithm, auth_data, etag = row
    count = _count_keys_txn(txn, user_id, version)
    return BackupVersion(version, str(algorithm), str(auth_data), int(etag), count)


def _update_auth_data_txn(
    txn: Txn, user_id: str, version: int, algorithm: str, auth_data_json: str
) -> UpdateResult:
    row = txn.execute(
        "SELECT algorithm FROM room_key_versions"
        " WHERE user_id = ? AND version = ? AND deleted = 0",
        (user_id, version),
    ).fetchone()
    if row is None:
        return "no_such_version"
    if row[0] != algorithm:
        return "wrong_algorithm"
    txn.execute(
        "UPDATE room_key_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
        (auth_data_json, user_id, version),
    )
    return "updated"


def _delete_version_txn(txn: Txn, user_id: str, version: int) -> bool:
    txn.execute(
        "UPDATE room_key_versions SET deleted = 1 WHERE user_id = ? AND version = ?",
        (user_id, version),
    )
    if txn.rowcount == 0:
        return False
    txn.execute("DELETE FROM room_keys WHERE user_id = ? AND version = ?", (user_id, version))
    return True


# The spec's merge rule as one row-value comparison: a smaller tuple is a better key
# (verified first, then lower first_message_index, then lower forwarded_count).
_UPSERT_KEY = (
    "INSERT INTO room_keys (user_id, version, room_id, session_id, first_message_index,"
    " forwarded_count, is_verified, session_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
    " first_message_index = excluded.first_message_index,"
    " forwarded_count = excluded.forwarded_count,"
    " is_verified = excluded.is_verified,"
    " session_data = excluded.session_data"
    " WHERE (1 - excluded.is_verified, excluded.first_message_index, excluded.forwarded_count)"
    " < (1 - room_keys.is_verified, room_keys.first_message_index, room_keys.forwarded_count)"
)


def _upload_keys_txn(
    txn: Txn, user_id: str, version: int, keys: Sequence[RoomKey]
) -> KeyWriteResult:
    current = _current_version_txn(txn, user_id)
    etag = _etag_txn(txn, user_id, version)
    if etag is None:
        return KeyWriteResult("no_such_version", current)
    if version != current:
        return KeyWriteResult("not_current", current)
    txn.executemany(
        _UPSERT_KEY,
        [
            (
                user_id,
                version,
                k.room_id,
                k.session_id,
                k.first_message_index,
                k.forwarded_count,
                int(k.is_verified),
                k.session_data_json,
            )
            for k in keys
        ],
    )
    # rowcount sums the rows inserted or updated; an upsert whose WHERE is false counts 0.
    if keys and txn.rowcount > 0:
        _bump_etag_txn(txn, user_id, version)
        etag += 1
    return KeyWriteResult("ok", current, _count_keys_txn(txn, user_id, version), etag)


def _key_filter(room_id: str | None, session_id: str | None) -> tuple[str, tuple[str, ...]]:
    # A session id only narrows within a room (the API has no session-only paths).
    if room_id is None:
        return "", ()
    if session_id is None:
        return " AND room_id = ?", (room_id,)
    return " AND room_id = ? AND session_id = ?", (room_id, session_id)


def _get_keys_txn(
    txn: Txn, user_id: str, version: int, room_id: str | None, session_id: str | None
) -> list[RoomKey] | None:
    if _etag_txn(txn, user_id, version) is None:
        return None
    where, params = _key_filter(room_id, session_id)
    rows = txn.execute(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,"
        " session_data FROM room_keys WHERE user_id = ? AND version = ?" + where,
        (user_id, version, *params),
    ).fetchall()
    return [RoomKey(str(r), str(s), int(f), int(c), bool(v), str(d)) for r, s, f, c, v, d in rows]


def _delete_keys_txn(
    txn: Txn, user_id: str, version: int, room_id: str | None, session_id: str | None
) -> KeyWriteResult:
    current = _current_version_txn(txn, user_id)
    etag = _etag_txn(txn, user_id, version)
    if etag is None:
        return KeyWriteResult("no_such_version", current)
    where, params = _key_filter(room_id, session_id)
    txn.execute(
        "DELETE FROM room_keys WHERE user_id = ? AND version = ?" + where,
        (user_id, version, *params),
    )
    if txn.rowcount > 0:
        _bump_etag_txn(txn, user_id, version)
        etag += 1
    return KeyWriteResult("ok", current, _count_keys_txn(txn, user_id, version), etag)


def _delete_all_txn(txn: Txn, user_id: str) -> None:
    txn.execute("DELETE FROM room_keys WHERE user_id = ?", (user_id,))
    txn.execute("DELETE FROM room_key_versions WHERE user_id = ?", (user_id,))


class RoomKeyStore:
    """Key backup versions and the room keys in them, per user."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data_json: str) -> int:
        """Create a backup version, which becomes the user's current one.

        Args:
            user_id: the owner.
            algorithm: the backup algorithm (e.g. ``m.megolm_backup.v1.curve25519-aes-sha2``).
            auth_data_json: the algorithm's ``auth_data``, as JSON text.

        Returns:
            The new version number (one more than any the user had, deleted ones included).

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "create_room_key_version", _create_version_txn, user_id, algorithm, auth_data_json
        )

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A version's metadata and key count, or None when it is unknown or deleted.

        Args:
            version: the version, or None for the current one.

        Checkpoint: yes.
        """
        # A reader thread, not inline: the key count is not bounded by a limit.
        return await self._db.run_read("get_room_key_version", _get_version_txn, user_id, version)

    async def update_auth_data(
        self, user_id: str, version: int, algorithm: str, auth_data_json: str
    ) -> UpdateResult:
        """Replace a version's ``auth_data``, if its algorithm is `algorithm` (one transaction).

        Returns:
            "updated", or why nothing changed: the version is unknown or deleted, or has
            another algorithm.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "update_room_key_version",
            _update_auth_data_txn,
            user_id,
            version,
            algorithm,
            auth_data_json,
        )

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Delete a version and its keys (deleting it again is a no-op).

        Returns:
            False when the user never had this version.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_room_key_version", _delete_version_txn, user_id, version
        )

    async def upload_keys(
        self, user_id: str, version: int, keys: Sequence[RoomKey]
    ) -> KeyWriteResult:
        """Merge `keys` into `version`, which must be the current version.

        Each key is inserted, or replaces the stored one for its session when it is better
        (see the module docstring); the etag is bumped when anything changed.

        Returns:
            The outcome; nothing is written unless it is ``ok``.

        Checkpoint: yes.
        """
        return await self._db.run_txn("upload_room_keys", _upload_keys_txn, user_id, version, keys)

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> list[RoomKey] | None:
        """The keys of a version, all or those of a room or of one session.

        Returns:
            None when the version is unknown or deleted.

        Checkpoint: yes (a reader thread: a whole backup can be large).
        """
        return await self._db.run_read(
            "get_room_keys", _get_keys_txn, user_id, version, room_id, session_id
        )

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> KeyWriteResult:
        """Delete the keys of a version (any live version, not only the current one): all,
        a room's or one session's.

        Returns:
            The outcome (``ok`` or ``no_such_version``), with the count and etag afterwards.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_room_keys", _delete_keys_txn, user_id, version, room_id, session_id
        )

    async def delete_all(self, user_id: str) -> None:
        """Forget every backup version and key of a user (account deactivation).

        Checkpoint: yes.
        """
        await self._db.run_txn("delete_all_room_keys", _delete_all_txn, user_id)
