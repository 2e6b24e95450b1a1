"""The steps of a port, in order (see the package docstring)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from trioserver.errors import StartupError
from trioserver.port_db.source import SEARCH_TABLE, open_source
from trioserver.port_db.target import (
    PostgresTarget,
    SourceIdentity,
    TableProgress,
    first_line,
    seeded_rows,
)
from trioserver.port_db.values import RowChecker, unsupported_types
from trioserver.port_db.verify import (
    check_counts,
    check_identities,
    check_stream_positions,
    reset_identities,
)
from trioserver.stores.sqlite_lock import exclusive_database_lock

if TYPE_CHECKING:
    from trioserver.config import Config
    from trioserver.port_db.progress import Progress
    from trioserver.port_db.source import SqliteSource, TableSpec

# Rows per batch (one PostgreSQL transaction each): large enough that commits cost little,
# small enough that a batch of the largest rows (event JSON, up to 64 KiB) stays in memory.
DEFAULT_BATCH_SIZE = 2000

_CREATE_HINT = (
    "create an empty one with: CREATE DATABASE name ENCODING 'UTF8' LC_COLLATE 'C'"
    " LC_CTYPE 'C' TEMPLATE template0"
)


@attrs.frozen
class PortResult:
    """What a complete port copied and verified.

    Attributes:
        source: the SQLite file.
        tables: how many tables were copied.
        rows: rows on PostgreSQL (the search index's included).
        positions: every stream's position, by stream name.
        resumed: whether this run continued an interrupted one.
        replaced_nul: text values whose NUL characters were replaced, by table.
    """

    source: Path
    tables: int
    rows: int
    positions: dict[str, int]
    resumed: bool
    replaced_nul: dict[str, int]
    seconds: float


def port_database(
    config: Config, dsn: str, *, progress: Progress, batch_size: int, replace_nul: bool = False
) -> PortResult:
    """Copy the SQLite database of `config` into the PostgreSQL database `dsn`, or continue
    an interrupted copy into it.

    Raises:
        StartupError: a refusal or a failure, as one line for the user.
    """
    started = time.monotonic()
    if config.database.backend != "sqlite":
        raise StartupError(
            "the config's [database] backend is already postgres; port-db reads the SQLite"
            " database of a config that still uses it (database.path)"
        )
    path = config.data_path(config.database.path)
    if not path.is_file():
        raise StartupError(f"there is no SQLite database at {path} (database.path)")
    with exclusive_database_lock(path), closing(open_source(path)) as source:
        _check_source(source, config, path)
        with closing(PostgresTarget(dsn)) as target:
            try:
                result = _port(source, target, config, path, progress, batch_size, replace_nul)
            except sqlite3.Error as exc:
                raise StartupError(f"reading the SQLite database {path}: {exc}") from None
            except Exception as exc:
                # psycopg's errors (imported only with the `postgres` extra) as one line.
                if type(exc).__module__.startswith("psycopg"):
                    raise StartupError(f"PostgreSQL (--to): {first_line(exc)}") from None
                raise
    return attrs.evolve(result, seconds=time.monotonic() - started)


def _expected_files() -> list[str]:
    from trioserver.stores.schema import schema_files

    return [p.name for p in schema_files()]


def _check_source(source: SqliteSource, config: Config, path: Path) -> None:
    files = source.schema_files()
    expected = _expected_files()
    if not files:
        raise StartupError(f"{path} is not a trioserver database (it has no schema_files)")
    unknown = sorted(set(files) - set(expected))
    if unknown:
        raise StartupError(
            f"the SQLite database has schema files this version of trioserver does not know"
            f" ({', '.join(unknown)}): it was used by a newer version; port it with that one"
        )
    missing = sorted(set(expected) - set(files))
    if missing:
        raise StartupError(
            f"the SQLite database is at an older schema level (without {', '.join(missing)}):"
            " start the server once with this version of trioserver and stop it, then run"
            " port-db again"
        )
    stored = source.server_name()
    if stored is not None and stored != config.server_name:
        raise StartupError(
            f"the SQLite database belongs to server_name {stored!r}, but the config says"
            f" {config.server_name!r}"
        )


def _check_target_schema(target: PostgresTarget, specs: list[TableSpec]) -> None:
    applied = target.apply_schema()
    unknown = sorted(set(applied) - set(_expected_files()))
    if unknown:
        raise StartupError(
            "the target database has schema files this version of trioserver does not know"
            f" ({', '.join(unknown)}); use an empty database"
        )
    problems = []
    for spec in specs:
        types = target.column_types(spec.name)
        if set(types) != set(spec.columns):
            problems.append(f"{spec.name} ({', '.join(sorted(set(types) ^ set(spec.columns)))})")
        else:
            problems.extend(unsupported_types(spec.name, types))
    if problems:
        raise StartupError(
            "the tables differ between SQLite and PostgreSQL: " + ", ".join(problems)
        )


def _begin_or_resume(target: PostgresTarget, identity: SourceIdentity, names: list[str]) -> bool:
    """Start a port in the target, or find the unfinished one; whether it is a resumption."""
    unfinished = target.unfinished_port()
    if unfinished == identity:
        return True
    if unfinished is not None:
        raise StartupError(
            f"the target database holds an unfinished port of another SQLite database"
            f" ({unfinished.path}, server_name {unfinished.server_name!r}): finish that one,"
            f" or {_CREATE_HINT}"
        )
    seeded = seeded_rows()
    busy = target.tables_with_data(names, seeded)
    if busy:
        shown = ", ".join(busy[:5]) + (", ..." if len(busy) > 5 else "")
        raise StartupError(
            f"the target database is not empty (rows in {shown}); port-db only fills an empty"
            f" database: {_CREATE_HINT}"
        )
    target.begin(identity, names, [t for t in seeded if t in names])
    return False


def _port(
    source: SqliteSource,
    target: PostgresTarget,
    config: Config,
    path: Path,
    progress: Progress,
    batch_size: int,
    replace_nul: bool,
) -> PortResult:
    target.check_collation()
    specs = source.tables()
    _check_target_schema(target, specs)
    names = [spec.name for spec in specs] + [SEARCH_TABLE]
    identity = SourceIdentity(str(path.resolve()), config.server_name)
    resumed = _begin_or_resume(target, identity, names)
    states = target.progress()
    replaced = {}
    for spec in specs:
        checker = RowChecker(spec, target.column_types(spec.name), replace_nul=replace_nul)
        copy_table(source, target, spec, states[spec.name], checker, batch_size, progress)
        if checker.replaced:
            replaced[spec.name] = checker.replaced
    copy_search(source, target, states[SEARCH_TABLE], batch_size, progress)
    reset_identities(source, target)
    rows = check_counts(source, target, specs)
    positions = check_stream_positions(source, target)
    check_identities(source, target)
    target.finish()
    return PortResult(path, len(specs), rows, positions, resumed, replaced, 0.0)


def copy_table(
    source: SqliteSource,
    target: PostgresTarget,
    spec: TableSpec,
    state: TableProgress,
    checker: RowChecker,
    batch_size: int,
    progress: Progress,
) -> None:
    """Copy the rows of `spec` not copied yet, batch by batch, in key order."""
    copied = state.copied_rows
    progress.start(spec.name, source.count(spec.name), copied)
    last_key = state.last_key
    while not state.done:
        batch = source.batch(spec, last_key, batch_size)
        rows = checker.rows(batch)
        # A short batch is the last one; the key of a full one is where the next starts.
        last_key = spec.key_of(batch[-1]) if len(batch) == batch_size else None
        target.write_batch(spec, rows, last_key)
        copied += len(rows)
        progress.update(copied)
        if last_key is None:
            break
    progress.finish(copied)


def copy_search(
    source: SqliteSource,
    target: PostgresTarget,
    state: TableProgress,
    batch_size: int,
    progress: Progress,
) -> None:
    """Index the text of the FTS5 table into PostgreSQL's ``event_search``."""
    copied = state.copied_rows
    progress.start(SEARCH_TABLE, source.search_count(), copied)
    after = None if state.last_key is None else int(state.last_key[0])
    while not state.done:
        batch = source.search_batch(after, batch_size)
        # The server indexes text with NUL replaced (stores.search.searchable_text); an index
        # built by an older version may still hold some.
        rows = [(stream, _without_nul(text)) for stream, text in batch]
        after = int(batch[-1][0]) if len(batch) == batch_size else None
        target.write_search_batch(rows, None if after is None else [after])
        copied += len(rows)
        progress.update(copied)
        if after is None:
            break
    progress.finish(copied)


def _without_nul(text: object) -> object:
    return text.replace("\x00", " ") if isinstance(text, str) else text
