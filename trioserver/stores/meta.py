"""Facts about the server kept in the database itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.errors import ConfigError

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


def _check_server_name_txn(txn: Txn, server_name: str) -> str:
    txn.execute(
        "INSERT INTO server_meta (key, value) VALUES ('server_name', ?)"
        " ON CONFLICT (key) DO NOTHING",
        (server_name,),
    )
    row = txn.execute("SELECT value FROM server_meta WHERE key = 'server_name'").fetchone()
    assert row is not None
    return str(row[0])


async def check_server_name(db: Database, server_name: str) -> None:
    """Record the server name at first start; refuse to run later under another name.

    Raises:
        ConfigError: the database belongs to a different server name.

    Checkpoint: yes.
    """
    stored = await db.run_txn("check_server_name", _check_server_name_txn, server_name)
    if stored != server_name:
        raise ConfigError(
            f"the database was created for server_name {stored!r}, but the config says"
            f" {server_name!r}; user ids and events embed the name, so it cannot change"
        )
