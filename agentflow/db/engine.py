"""Engines, sessions and migrations.

Engines are created by the process that uses them (after gunicorn forks), never at
import time. sqlite runs in WAL mode with a busy timeout so many processes can share it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseError(Exception):
    """The database cannot be opened or migrated (bad URL, read-only or full disk)."""


PRIVATE_FILE_MODE = 0o600
"""Mode of the database and its -wal/-shm/-journal files: they hold every caller's
audited calls, which session code (another uid) must not read."""
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def tighten_mode(path: Path, mode: int) -> None:
    """Take away permission bits beyond ``mode`` from ``path`` if this process owns it.
    Symlinks are left alone (a chmod would follow them)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_mode & 0o777 & ~mode == 0:
        return
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        log.warning("%s is mode %o, looser than %o, and owned by another user: left as is",
                    path, st.st_mode & 0o777, mode)
        return
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError as err:  # e.g. a read-only disk: the open that follows reports it better
        log.warning("cannot tighten the mode of %s to %o: %s", path, mode, err)


def private_sqlite_files(db_path: Path, create: bool = True) -> None:
    """Create the database file 0600 if it is missing (SQLite gives its -wal and -shm
    files the database file's mode) and tighten what an older version left looser."""
    if create:
        try:
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             PRIVATE_FILE_MODE))
        except FileExistsError:
            pass
        except OSError as err:  # full or read-only disk: SQLite's own error says it when it opens
            log.debug("cannot create %s ahead of SQLite: %s", db_path, err)
    for suffix in ("", *_SQLITE_SIDE_FILES):
        tighten_mode(Path(f"{db_path}{suffix}"), PRIVATE_FILE_MODE)


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'agentflow.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_file(url: str) -> str:
    """The file part of a sqlite URL (empty, or ``:memory:``, for a database in memory)."""
    return url.split("///", 1)[-1].split("?", 1)[0]


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """Create an engine for ``url``; sqlite gets WAL, a busy timeout and a file check.

    With ``immediate`` a sqlite transaction takes the write lock when it begins
    (``BEGIN IMMEDIATE``): use it for read-then-write transactions, which would
    otherwise fail with "database is locked" instead of waiting their turn.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=16, max_overflow=48, pool_pre_ping=True)
    path = _sqlite_file(url)
    if path and path != ":memory:":
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseError(f"cannot create database directory {parent}: {err}") from err
        if not os.access(parent, os.W_OK):
            raise DatabaseError(f"database directory {parent} is not writable")
        private_sqlite_files(Path(path), create="?" not in url)  # a URI's query may name another file
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=16,
        max_overflow=48,
    )
    begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        _sqlite_pragmas(dbapi_conn, _record)
        if path and path != ":memory:":  # the -wal/-shm files exist now: a looser leftover is fixed
            for suffix in _SQLITE_SIDE_FILES:
                tighten_mode(Path(f"{path}{suffix}"), PRIVATE_FILE_MODE)
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins (SQLAlchemy's
        # documented pysqlite recipe), so BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql(begin_sql)

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrations_dir() -> Path:
    """The Alembic migrations: ``migrations/`` of a source checkout, else the copy an
    installed wheel carries as ``agentflow/_migrations`` (see setup.py)."""
    package = Path(__file__).resolve().parent.parent
    for cand in (package / "_migrations", package.parent / "migrations"):
        if (cand / "env.py").exists() and (cand / "versions").is_dir():
            return cand
    raise DatabaseError(f"Alembic migrations folder not found (neither {package.parent / 'migrations'} nor "
                        f"{package / '_migrations'}): reinstall AgentFlow from a wheel or a source checkout")


def alembic_config(url: str):
    import sys

    from alembic.config import Config

    cfg = Config(stdout=sys.stdout)  # alembic's default binds the stdout of its import time
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


MIGRATION_LOCK_KEY = 0x6167_666C_6F77
"""The PostgreSQL advisory lock nodes take to migrate one at a time (ASCII "agflow")."""


@contextlib.contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock while migrating: nodes on several
    machines starting against one empty database migrate it once, in turn."""
    from sqlalchemy import text

    engine = create_engine(url, poolclass=_null_pool())
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def _migration_lock_path(lock_dir: Path) -> Path:
    return lock_dir / ".migrate.lock"


@contextlib.contextmanager
def _migration_lock(url: str, lock_dir: Path | None) -> Iterator[None]:
    if url.startswith("postgresql"):
        with _advisory_lock(url):
            yield
        return
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock_path = _migration_lock_path(lock_dir)
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    tighten_mode(lock_path, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head", lock_dir: Path | None = None) -> None:
    """Run Alembic migrations up to ``revision``. Processes take turns: on PostgreSQL
    under an advisory lock in the database, on sqlite under a file lock in ``lock_dir``.

    A database already at the newest revision is left alone after one read of its
    version table: every rollout and synthesis run calls this, and Alembic's full pass
    (load every revision file, run ``env.py``) cost 14 ms of a run's start."""
    from alembic import command

    try:
        if revision == "head" and _at_head(url):
            if lock_dir is not None and _migration_lock_path(lock_dir).exists():
                # a looser lock file an older version left is tightened all the same
                tighten_mode(_migration_lock_path(lock_dir), PRIVATE_FILE_MODE)
            return
        with _migration_lock(url, lock_dir):
            command.upgrade(alembic_config(url), revision)
    except DatabaseError:
        raise
    except Exception as err:  # boundary: alembic/driver errors become one clear message
        raise DatabaseError(f"cannot migrate database {_safe_url(url)}: {err}") from err


@functools.cache
def _head_revisions() -> frozenset[str]:
    """The head revisions of the migrations this process runs (read once: they are
    files of the installed package)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def _at_head(url: str) -> bool:
    """The database exists and its version table names exactly the head revisions. A
    sqlite file that does not exist yet is not read (the migration creates it, with
    its private mode)."""
    from alembic.runtime.migration import MigrationContext

    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if not path or path == ":memory:" or "?" in url or not Path(path).exists():
            return False
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return bool(current) and current == _head_revisions()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return "<database>"
