"""The viewer's database access: opened read-only, one session per request.

Every connection the viewer makes is read-only at the database, not only by our care:

* **sqlite** is opened through a ``file:…?mode=ro`` URI (SQLite refuses every write on
  the connection), with ``PRAGMA query_only`` on, ``ATTACH`` disabled
  (``SQLITE_LIMIT_ATTACHED`` 0: attaching a missing file would create it) and an
  authorizer that allows reads only. A missing file is an error, never created.
* **PostgreSQL** connections start with ``default_transaction_read_only=on`` and a
  ``statement_timeout``, so the server refuses writes in every transaction.

On top of that the ORM session refuses to flush. Engines are created by the process that
serves (after gunicorn forks), never at import time.
"""
from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import Callable

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from ..db.engine import SQLITE_BUSY_TIMEOUT_MS, DatabaseError

__all__ = ["ReadOnlyViolation", "database_kind", "get_session", "init_app", "make_readonly_engine", "schema_status",
           "sqlite_authorizer"]

STATEMENT_TIMEOUT_MS = 30_000
"""PostgreSQL's ``statement_timeout`` for the viewer's own queries (the SQL page sets a shorter one)."""

_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                           "foreign_key_list", "database_list", "collation_list", "function_list", "pragma_list",
                           "compile_options", "user_version", "schema_version", "data_version", "page_count",
                           "page_size", "freelist_count", "encoding", "application_id", "journal_mode",
                           "read_uncommitted", "query_only", "foreign_keys"})
"""Pragmas a read-only connection may run, and only to read them (no ``= value``)."""
_TABLE_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                            "foreign_key_list", "table_list"})
"""Pragmas whose argument is a table or index name, not a new value."""
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT})


class ReadOnlyViolation(RuntimeError):
    """Something tried to write through the viewer's session (a bug: the viewer only reads)."""


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql`` (the only two AgentFlow supports).

    Raises:
        DatabaseError: another kind of URL, or one that does not parse.
    """
    try:
        backend = make_url(url).get_backend_name()
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises ArgumentError and friends
        raise DatabaseError(f"not a database URL: {url!r} ({err})") from None
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"the viewer reads sqlite or PostgreSQL databases, not {backend!r} ({url!r})")
    return backend


def sqlite_authorizer(action: int, arg1, arg2, _db, _trigger) -> int:
    """The sqlite authorizer of every viewer connection: reads, read-only pragmas and
    transaction control pass; anything else (writes, DDL, ATTACH, setting a pragma) is
    denied, which fails the statement with "not authorized"."""
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _READ_PRAGMAS and (arg2 is None or name in _TABLE_PRAGMAS):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise DatabaseError(f"the viewer needs a sqlite database file (sqlite:////path/to/agentflow.db), "
                            f"got {url!r}")
    return Path(database).expanduser().resolve()


def _sqlite_connect(path: Path) -> Callable[[], sqlite3.Connection]:
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(sqlite_authorizer)
        return conn

    return connect


def make_readonly_engine(url: str) -> Engine:
    """A read-only engine for ``url`` (see the module docstring).

    Raises:
        DatabaseError: not sqlite or PostgreSQL, or the sqlite file does not exist.
    """
    kind = database_kind(url)
    if kind == "sqlite":
        path = _sqlite_path(url)
        if not path.is_file():
            raise DatabaseError(f"no sqlite database at {path} (the viewer never creates one; run a rollout or "
                                f"`agentflow db upgrade --database-url {url}` first)")
        # "sqlite://" names no file (the creator opens it); QueuePool as for any file database
        return create_engine("sqlite://", creator=_sqlite_connect(path), poolclass=QueuePool, pool_size=8,
                             max_overflow=16)
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True,
                         connect_args={"options": options, "application_name": "agentflow-view"})


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(the database's Alembic revision, this AgentFlow's newest) — equal when the viewer
    can read every table it expects.

    Raises:
        DatabaseError: the database cannot be read, or holds no AgentFlow tables.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from ..db.engine import alembic_config

    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                raise DatabaseError("this database holds no AgentFlow tables (no alembic_version table)")
            current = MigrationContext.configure(conn).get_current_revision()
    except DatabaseError:
        raise
    except Exception as err:  # boundary: driver errors become one clear message
        raise DatabaseError(f"cannot read the database: {err}") from err
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    return current, head


def _refuse_flush(session, _context, _instances) -> None:
    raise ReadOnlyViolation("the viewer never writes to the database")


def init_app(app: Flask) -> None:
    """Open the read-only engine for ``app.config["DATABASE_URL"]`` and close each
    request's session when the request ends."""
    engine = make_readonly_engine(app.config["DATABASE_URL"])
    factory = sessionmaker(engine, autoflush=False, expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_flush)
    app.extensions["agentflow_view_db"] = {"engine": engine, "sessions": factory,
                                          "kind": database_kind(app.config["DATABASE_URL"])}
    app.teardown_appcontext(_close_session)


def engine() -> Engine:
    return current_app.extensions["agentflow_view_db"]["engine"]


def kind() -> str:
    return current_app.extensions["agentflow_view_db"]["kind"]


def get_session() -> Session:
    """This request's session (opened on first use)."""
    if "view_session" not in g:
        g.view_session = current_app.extensions["agentflow_view_db"]["sessions"]()
    return g.view_session


def _close_session(_exc) -> None:
    session = g.pop("view_session", None)
    if session is not None:
        session.rollback()
        session.close()
