"""Checking SQLite's values against the PostgreSQL column types they go into.

Theory of operation
-------------------
SQLite types values, not columns: a column declared INTEGER keeps a text that does not look
like a number as text, and any column can hold a blob. PostgreSQL refuses such a value, or
worse, stores something else (a blob given to a TEXT column would arrive as its ``\\x`` hex
spelling). So every row is checked before it is sent, and the first value that does not fit
stops the port with the table, column and row key, before anything of its batch is written.

Text with a NUL character is the one case that real traffic produces (a display name set to
``"a\\u0000b"`` is stored as it came): PostgreSQL's TEXT cannot hold NUL at all. port-db stops
and says so, unless asked (``--replace-nul``) to replace each NUL with a space, which is what
the server does with the text it indexes for search (`stores.search.searchable_text`).

The check is cheap in the usual case: a row's tuple of value types is compared with the ones
already seen to fit, and only text columns are searched for NUL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.port_db.source import TableSpec
    from trioserver.stores.database import Row

# The Python types SQLite hands back that each PostgreSQL column type takes as they are.
_ACCEPTED: dict[str, tuple[type, ...]] = {
    "bigint": (int,),
    "integer": (int,),
    "smallint": (int,),
    "text": (str,),
    "double precision": (float, int),
    "real": (float, int),
    "bytea": (bytes,),
}
_NUL = "\x00"


def unsupported_types(table: str, types: dict[str, str]) -> list[str]:
    """The columns of `table` of a PostgreSQL type port-db cannot fill, as messages."""
    return [f"{table}.{c} ({t})" for c, t in types.items() if t not in _ACCEPTED]


class RowChecker:
    """Checks (and with `replace_nul`, fixes) the rows of one table before they are sent."""

    def __init__(self, spec: TableSpec, types: dict[str, str], *, replace_nul: bool) -> None:
        self._spec = spec
        self._types = [types[c] for c in spec.columns]
        self._accepted = [_ACCEPTED[t] for t in self._types]
        self._text = [i for i, c in enumerate(spec.columns) if types[c] == "text"]
        self._replace_nul = replace_nul
        self._offset = 1 if spec.by_rowid else 0
        self._fitting: set[tuple[type, ...]] = set()
        self.replaced = 0  # values whose NULs were replaced

    def rows(self, batch: Sequence[Row]) -> list[tuple[Any, ...]]:
        """The batch's rows as they are sent: without the rowid, each value checked.

        Raises:
            StartupError: a value PostgreSQL cannot take (the message says which and why).
        """
        out = []
        offset = self._offset
        for row in batch:
            values = row[offset:] if offset else tuple(row)
            kinds = tuple(map(type, values))
            if kinds not in self._fitting:
                self._check_types(row, values)
                self._fitting.add(kinds)
            for i in self._text:
                value = values[i]
                if value is not None and _NUL in value:
                    values = self._nul(row, values, i)
            out.append(values)
        return out

    def _check_types(self, row: Row, values: Sequence[Any]) -> None:
        checked = zip(self._spec.columns, values, self._accepted, self._types, strict=True)
        for column, value, accepted, pg_type in checked:
            if value is not None and not isinstance(value, accepted):
                raise StartupError(
                    f"{self._where(row, column)} holds a {_sqlite_kind(value)} value, which"
                    f" its PostgreSQL column ({pg_type}) cannot take; fix or delete the row in"
                    " the SQLite database, then run port-db again (it continues where it"
                    " stopped)"
                )

    def _nul(self, row: Row, values: tuple[Any, ...], i: int) -> tuple[Any, ...]:
        if not self._replace_nul:
            raise StartupError(
                f"{self._where(row, self._spec.columns[i])} holds text with a NUL character,"
                " which PostgreSQL cannot store; run port-db again with --replace-nul to"
                " replace each NUL with a space (it continues where it stopped)"
            )
        self.replaced += 1
        return (*values[:i], values[i].replace(_NUL, " "), *values[i + 1 :])

    def _where(self, row: Row, column: str) -> str:
        pairs = zip(self._spec.key, self._spec.key_of(row), strict=True)
        key = ", ".join(f"{k}={v!r}" for k, v in pairs)
        return f"{self._spec.name}.{column} of the row {key}"


def _sqlite_kind(value: Any) -> str:
    return {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(
        type(value), type(value).__name__
    )
