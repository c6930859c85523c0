"""Row writes straight through the DB-API: the hot path of every audited call.

An audited call writes two or three small rows (its audit row, its request record, a
session touch). Through SQLAlchemy's execution machinery — cache key, execution
context, result object, pool checkout, ``begin`` events — each transaction cost 60-80
µs of CPU before the database did anything, several times the write itself. Here each
statement is compiled by SQLAlchemy once per set of keys (so the SQL, casts and type
processing stay SQLAlchemy's) and then run with the driver's ``executemany`` on one
connection kept for the purpose.

On sqlite, writers of different processes also queue on a file lock
(:class:`SqliteWriteLock`) before ``BEGIN IMMEDIATE``: a waiter sleeps in the kernel
and wakes the moment the lock frees, instead of in SQLite's busy handler, which polls
in sleeps of 1 to 100 ms and made the latency tail.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import Table, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Engine

from .engine import PRIVATE_FILE_MODE, tighten_mode

_Processor = Callable[[Any], Any] | None


class NotCompilable(Exception):
    """A statement this path cannot run (it needs SQLAlchemy's defaults machinery)."""


class CompiledRows:
    """One statement compiled for one dialect and one set of row keys."""

    __slots__ = ("sql", "_plan", "_positional")

    def __init__(self, target: Any, keys: Iterable[str], engine: Engine):
        keys = list(keys)
        statement = insert(target) if isinstance(target, Table) else target
        compiled = statement.compile(dialect=engine.dialect, column_keys=keys if isinstance(target, Table) else None)
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise NotCompilable("a column default must be computed in Python")
        processors = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's own type processing
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        given = set(keys)
        plan: list[tuple[str, bool, Any, _Processor]] = []
        for name in names:
            bind = compiled.binds[name]
            if name in given:
                plan.append((name, True, None, _faster(bind.type.dialect_impl(engine.dialect), processors.get(name))))
            elif bind.callable is None and not bind.required and bind.value is not None:
                fixed = bind.value  # a literal of the statement, e.g. status='done'
                proc = processors.get(name)
                plan.append((name, False, proc(fixed) if proc else fixed, None))
            else:
                raise NotCompilable(f"no value for bind parameter {name!r}")
        self.sql = compiled.string
        self._plan = plan
        self._positional = compiled.positional

    def parameters(self, values: dict) -> tuple | dict:
        """The driver's parameters for one row."""
        out = [(values[name] if proc is None else proc(values[name])) if given else fixed
               for name, given, fixed, proc in self._plan]
        return tuple(out) if self._positional else {p[0]: v for p, v in zip(self._plan, out)}


def _faster(impl: Any, processor: _Processor) -> _Processor:
    """``processor``, or one giving the same result faster.

    sqlite stores a DateTime as text that SQLAlchemy formats with ``%`` from seven
    fields, the costliest step of writing an audit row; for a naive datetime that
    text is exactly ``isoformat(" ", "microseconds")``, which runs in C."""
    if processor is None or type(impl) is not SQLITE_DATETIME \
            or impl._storage_format != SQLITE_DATETIME._storage_format:  # noqa: SLF001 - a custom format
        return processor

    def process(value: Any) -> Any:
        if type(value) is dt.datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return processor(value)
    return process


class CompiledSelect:
    """A SELECT of whole table rows compiled once, run straight on a DB-API cursor.

    For the reads every call makes (its worker's session): SQLAlchemy's execution path
    (connection begin events, execution context, result object) cost more CPU than a
    ``bash:run`` call's own work. The SQL, the bind order and the type processing of
    each column (datetimes, JSON, booleans) are SQLAlchemy's."""

    __slots__ = ("sql", "_binds", "_fixed", "_positional", "_columns")

    def __init__(self, statement: Any, engine: Engine):
        compiled = statement.compile(dialect=engine.dialect)
        dialect = engine.dialect
        self.sql = compiled.string
        self._positional = compiled.positional
        self._binds = list(compiled.positiontup if compiled.positional else compiled.binds)
        # the statement's own values (its LIMIT); a bind without one comes from the caller
        self._fixed = {name: compiled.binds[name].effective_value for name in self._binds
                       if compiled.binds[name].value is not None}
        self._columns = [(col.key, col.type.dialect_impl(dialect).result_processor(dialect, None))
                         for col in statement.selected_columns]

    def first(self, engine: Engine, values: dict) -> dict | None:
        """The first row for ``values`` (the bind parameters by name), or None."""
        values = {**self._fixed, **values}
        params = tuple(values[name] for name in self._binds) if self._positional else values
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self.sql, params)
                found = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool, which rolls back whatever the driver began
        if found is None:
            return None
        return {key: (proc(v) if proc is not None else v) for (key, proc), v in zip(self._columns, found)}


class RowWriter:
    """Runs groups of row statements in one transaction on a connection of its own.

    Not thread-safe: the group committer's leader is its only user at any moment.
    Driver errors are raised as SQLAlchemy's exception classes (``IntegrityError``…),
    as the ORM path would raise them.
    """

    def __init__(self, engine: Engine):
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._compiled: dict[tuple, CompiledRows | None] = {}
        self._conn = None

    def compiled(self, target: Any, keys: tuple[str, ...]) -> CompiledRows | None:
        """The compiled statement, or None when only SQLAlchemy's full path can run it."""
        key = (target, keys)
        if key not in self._compiled:
            try:
                self._compiled[key] = CompiledRows(target, keys, self._engine)
            except NotCompilable:
                self._compiled[key] = None
        return self._compiled[key]

    def run(self, statements: list[tuple[CompiledRows, list[dict]]]) -> None:
        conn = self._connection()
        cursor = conn.cursor()
        sql = None
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            for compiled, rows in statements:
                sql = compiled.sql
                cursor.executemany(sql, [compiled.parameters(r) for r in rows])
            if self._sqlite:
                cursor.execute("COMMIT")
            else:
                conn.commit()
        except BaseException as err:
            self._abandon()
            dbapi = self._engine.dialect.loaded_dbapi
            if isinstance(err, dbapi.Error):
                raise sa_exc.DBAPIError.instance(sql, None, err, dbapi.Error, dialect=self._engine.dialect) \
                    from err
            raise
        finally:
            try:
                cursor.close()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass

    def _connection(self):
        if self._conn is None:
            self._conn = self._engine.raw_connection()
        return self._conn

    def _abandon(self) -> None:
        """After a failed transaction: roll back and give the connection up (a broken
        one must not serve the next transaction; a fresh one is cheap)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback() if not self._sqlite else conn.cursor().execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - nothing was open, or the connection is gone
            pass
        try:
            conn.invalidate()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class SqliteWriteLock:
    """A file lock the writers of every process of one sqlite database take before
    ``BEGIN IMMEDIATE``, so a waiting writer is woken when the lock frees rather than
    polling in SQLite's busy handler. Writers that do not take it (other tools on the
    same file) still meet SQLite's own lock and busy timeout, as before."""

    def __init__(self, db_path: Path):
        self.path = Path(f"{db_path}-writer.lock")
        self._fd: int | None = None
        self._pid = -1
        self._guard = threading.Lock()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
            self._pid = os.getpid()
            tighten_mode(self.path, PRIVATE_FILE_MODE)
        return self._fd

    def __enter__(self) -> "SqliteWriteLock":
        self._guard.acquire()
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        except BaseException:
            self._guard.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_UN)
        finally:
            self._guard.release()


def process_write_lock(engine: Engine) -> "SqliteWriteLock | threading.Lock":
    """The lock a process's writers hold around each write transaction (the server's
    group committer, a rollout's or a synthesis run's writes, the model cache's stores):
    one at a time within the process, and on a sqlite file also in turn with the writers
    of every other process, woken as soon as the lock frees instead of sleeping in
    SQLite's busy handler."""
    path = sqlite_path(engine)
    return SqliteWriteLock(path) if path is not None else threading.Lock()


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a sqlite engine, or None (another database, or in memory)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
