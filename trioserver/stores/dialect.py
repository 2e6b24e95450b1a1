"""The few SQL expressions that SQLite and PostgreSQL spell differently, in one place.

A store writes its statements once; where the dialects differ it asks this module for the
fragment, by the transaction's `Txn.dialect`. Everything else (``ON CONFLICT``, ``RETURNING``,
window functions, ``COALESCE``) is written the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.stores.database import Dialect, Txn


def json_array_rows(txn: Txn, parameter: str) -> str:
    """A FROM item with one row per element of the JSON array (text) `parameter`, the
    element's text in column ``j.value``."""
    if txn.dialect == "postgres":
        return f"jsonb_array_elements_text(CAST({parameter} AS jsonb)) AS j(value)"
    return f"json_each({parameter}) AS j"


def json_text(dialect: Dialect, column: str, *keys: str) -> str:
    """The text at `keys` inside the JSON document (text) in `column`, NULL when absent."""
    if dialect == "postgres":
        return f"(CAST({column} AS jsonb) #>> '{{{','.join(keys)}}}')"
    return f"json_extract({column}, '$.{'.'.join(keys)}')"


def greatest(txn: Txn) -> str:
    """The function giving the largest of its arguments (SQLite's many-argument MAX)."""
    return "GREATEST" if txn.dialect == "postgres" else "MAX"


def like_any_case(dialect: Dialect) -> str:
    """The LIKE operator that ignores case (SQLite's LIKE does, for ASCII letters)."""
    return "ILIKE" if dialect == "postgres" else "LIKE"
