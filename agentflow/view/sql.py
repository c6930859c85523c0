"""The SQL page's query runner: one read-only statement, a time limit, a row cap.

Three layers keep it read-only, each enough alone for writes:

1. :func:`check_statement` accepts one statement whose first word reads
   (``SELECT``, ``WITH``, ``VALUES``, ``EXPLAIN``, ``PRAGMA``, ``SHOW``, ``TABLE``), so
   a refused query gets a clear message;
2. the connection is read-only (``mode=ro`` with an authorizer on sqlite, a ``READ ONLY``
   transaction on PostgreSQL, see :mod:`agentflow.view.db`);
3. the transaction is always rolled back.

The statement runs on the raw DB-API cursor, so neither ``:name`` nor ``%`` in it is
taken for a parameter.
"""
from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
from typing import Any

from sqlalchemy.engine import Engine

__all__ = ["MAX_ROWS", "TIME_LIMIT_S", "QueryError", "QueryRefused", "QueryResult", "check_statement", "run_query"]

MAX_ROWS = 1000
"""Rows shown at most; the page says when a result had more."""
TIME_LIMIT_S = 5.0
"""A query running longer is stopped."""
MAX_CELL_CHARS = 2000
"""A longer value is cut on the page (the page says so)."""
MAX_QUERY_CHARS = 20_000

_READING = ("select", "with", "values", "explain", "pragma", "show", "table")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<line>--[^\n]*)
  | (?P<block>/\*.*?(?:\*/|\Z))
  | (?P<quoted>'(?:[^']|'')*(?:'|\Z) | "(?:[^"]|"")*(?:"|\Z) | `[^`]*(?:`|\Z) | \[[^\]]*(?:\]|\Z))
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
  | (?P<semi>;)
  | (?P<word>[A-Za-z_]\w*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


class QueryError(ValueError):
    """The query failed at the database (syntax, unknown table, time limit); safe to fix and rerun."""


class QueryRefused(QueryError):
    """The query is not one read-only statement, so it was not run."""


@dataclasses.dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    """More than :data:`MAX_ROWS` rows matched."""
    cut_cells: int
    """Values cut at :data:`MAX_CELL_CHARS`."""
    elapsed_ms: float


def check_statement(sql: str) -> str:
    """The statement to run: ``sql`` without trailing semicolons.

    Raises:
        QueryRefused: empty, too long, more than one statement, or one that does not read
            (an ``INSERT``, ``ATTACH``, ``PRAGMA x = y``...).
    """
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryRefused(f"the query is {len(sql)} characters long; the limit is {MAX_QUERY_CHARS}")
    words: list[str] = []
    end = None
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("space", "line", "block"):
            continue
        if kind == "semi":
            end = m.start() if end is None else end
            continue
        if end is not None:
            raise QueryRefused("one statement at a time: remove everything after the first ';'")
        if kind == "word":
            words.append(m.group().lower())
        elif not words:
            words.append(m.group())
    if not words:
        raise QueryRefused("the query is empty")
    if words[0] not in _READING:
        raise QueryRefused(f"only queries that read run here (SELECT, WITH, VALUES, EXPLAIN, PRAGMA); this one "
                           f"starts with {words[0].upper()!r}: the database is open read-only")
    if words[0] == "pragma" and "=" in sql[: end if end is not None else len(sql)]:
        raise QueryRefused("PRAGMA may only read a setting here, not change it")
    return sql[:end].rstrip() if end is not None else sql.rstrip()


def run_query(engine: Engine, sql: str, *, max_rows: int = MAX_ROWS, time_limit_s: float = TIME_LIMIT_S) -> QueryResult:
    """Run one read-only statement and return at most ``max_rows`` rows.

    Raises:
        QueryRefused: see :func:`check_statement`, or the database refused it as a write.
        QueryError: the database reported an error, or the query ran past ``time_limit_s``.
    """
    statement = check_statement(sql)
    sqlite = engine.dialect.name == "sqlite"
    raw = engine.raw_connection()
    t0 = time.perf_counter()
    try:
        dbapi = raw.driver_connection
        if sqlite:
            deadline = time.monotonic() + time_limit_s
            dbapi.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        cur = dbapi.cursor()
        try:
            if not sqlite:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {int(time_limit_s * 1000)}")
            cur.execute(statement)
            columns = [d[0] for d in cur.description or []]
            fetched = cur.fetchmany(max_rows + 1) if cur.description else []
        except Exception as err:  # boundary: the driver's error is the user's answer
            raise _translate(err, time_limit_s) from None
        finally:
            cur.close()
    finally:
        try:
            raw.rollback()
        finally:
            if sqlite:
                raw.driver_connection.set_progress_handler(None, 0)
            raw.close()
    elapsed = (time.perf_counter() - t0) * 1000
    rows, cut = [], 0
    for row in fetched[:max_rows]:
        out = []
        for value in row:
            if isinstance(value, (bytes, memoryview)):
                value = f"<{len(bytes(value))} bytes>"
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                value, cut = value[:MAX_CELL_CHARS] + "…", cut + 1
            out.append(value)
        rows.append(out)
    return QueryResult(columns, rows, len(fetched) > max_rows, cut, elapsed)


def _translate(err: Exception, time_limit_s: float) -> QueryError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, sqlite3.OperationalError) and text == "interrupted":
        return QueryError(f"the query ran past the time limit of {time_limit_s:g} s and was stopped")
    if "statement timeout" in text:
        return QueryError(f"the query ran past the time limit of {time_limit_s:g} s and was stopped")
    if "not authorized" in text or "readonly" in text or "read-only" in text or "query_only" in text:
        return QueryRefused(f"refused by the database, which is open read-only: {text}")
    if "one statement at a time" in text or "multiple commands" in text:
        return QueryRefused("one statement at a time")
    return QueryError(text)
