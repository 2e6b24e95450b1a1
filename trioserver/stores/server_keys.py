"""Other servers' signing keys, as fetched over federation (table ``server_signing_keys``).

Theory of operation
-------------------
One row per (server, key id) holds the newest knowledge of that key: a row is replaced only
by one valid at least as long (``valid_until_ts``), so that a notary's stale copy never
overwrites what the server itself said more recently. Rows are never deleted: a key the
server no longer lists still verifies the events it signed while it was in use. The
in-memory cache in front of this table is `trioserver.federation.keyring.KeyRing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Row, Txn


@attrs.frozen
class StoredServerKey:
    """One server key as stored.

    Attributes:
        verify_key: the public key, unpadded base64.
        valid_until_ts: until when (ms) the key verifies, as a key of ``verify_keys``.
        expired_ts: for a key of ``old_verify_keys``, when it stopped being used (ms).
        from_server: the server that answered: the key's own server or a notary.
        key_json: the whole signed key response the key came in.
    """

    server_name: str
    key_id: str
    verify_key: str
    valid_until_ts: int
    expired_ts: int | None
    fetched_ts: int
    from_server: str
    key_json: str


_COLUMNS = (
    "server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, from_server,"
    " key_json"
)


def _row_to_key(row: Row) -> StoredServerKey:
    return StoredServerKey(
        server_name=str(row[0]),
        key_id=str(row[1]),
        verify_key=str(row[2]),
        valid_until_ts=int(row[3]),
        expired_ts=None if row[4] is None else int(row[4]),
        fetched_ts=int(row[5]),
        from_server=str(row[6]),
        key_json=str(row[7]),
    )


def _get_server_keys_txn(txn: Txn, server_name: str) -> list[StoredServerKey]:
    rows = txn.execute(
        f"SELECT {_COLUMNS} FROM server_signing_keys WHERE server_name = ? ORDER BY key_id",
        (server_name,),
    ).fetchall()
    return [_row_to_key(row) for row in rows]


def _store_server_keys_txn(txn: Txn, keys: Sequence[StoredServerKey]) -> None:
    # Both dialects: an upsert that keeps the row valid the longest.
    txn.executemany(
        f"INSERT INTO server_signing_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (server_name, key_id) DO UPDATE SET"
        " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
        " expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts,"
        " from_server = excluded.from_server, key_json = excluded.key_json"
        " WHERE excluded.valid_until_ts >= server_signing_keys.valid_until_ts",
        [
            (
                key.server_name,
                key.key_id,
                key.verify_key,
                key.valid_until_ts,
                key.expired_ts,
                key.fetched_ts,
                key.from_server,
                key.key_json,
            )
            for key in keys
        ],
    )


class ServerKeyStore:
    """Remote servers' verify keys, with the signed responses they came in."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_server_keys(self, server_name: str) -> list[StoredServerKey]:
        """Every key stored for `server_name`, by key id (current, old and stale ones).

        Checkpoint: yes.
        """
        return await self._db.run_read_inline("get_server_keys", _get_server_keys_txn, server_name)

    async def store_server_keys(self, keys: Sequence[StoredServerKey]) -> None:
        """Store fetched keys. A key already stored is replaced only by a row whose
        ``valid_until_ts`` is at least as late (see the module docstring).

        Checkpoint: yes.
        """
        if keys:
            await self._db.run_txn("store_server_keys", _store_server_keys_txn, keys)
