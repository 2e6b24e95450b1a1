"""``trioserver port-db``: move a server's SQLite database to an empty PostgreSQL database.

Theory of operation
-------------------
A port is a copy that can be interrupted at any moment and continued by running the same
command again, and that is checked before it is called complete:

1. **Refusals first.** The SQLite file must exist, no server may be running on it (port-db
   holds the file's lock exclusively for its whole run: `stores.sqlite_lock`), it must be at
   this version's schema level, and the target must collate as C and hold no trioserver data
   unless it is an unfinished port of the same file. Each refusal is one ``error:`` line.
2. **Schema.** The target gets the PostgreSQL schema (`stores.schema.apply_postgres_schema`),
   and both sides must then list the same schema files and the same columns per table.
3. **Copy** (`run.copy_table`), table by table in key order, in batches: each batch is one
   PostgreSQL transaction with its progress row (`target`), so progress never runs ahead of
   the rows nor behind them. Values are checked against their column types first
   (`values`). The FTS5 search table is not copied but re-indexed from its text.
4. **Identity sequences** are moved past the copied ids, and the copy is verified: row
   counts, stream positions, identities (`verify`). Only then are the progress tables
   dropped; the SQLite file was never written to.

The work is synchronous (one SQLite connection, one PostgreSQL connection): nothing else
runs meanwhile, and Ctrl-C stops it between two statements.
"""

from trioserver.port_db.run import DEFAULT_BATCH_SIZE, PortResult, port_database

__all__ = ["DEFAULT_BATCH_SIZE", "PortResult", "port_database"]
