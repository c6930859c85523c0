"""``text2sql``: read-only SQL over configured sqlite databases.

Config (``resources.text2sql.config`` or ``apis.text2sql``)::

    {"databases": {"retail": "seeds/text2sql/retail.sqlite",
                   "shop": {"path": "/data/shop.db", "description": "…"}},
     "max_rows": 100, "max_rows_limit": 5000, "statement_timeout": 30, "sample_rows": 3}

Relative paths resolve against the project directory. An empty path (what
``"${VAR:-}"`` gives when the variable is unset) means "not configured": the id is
listed by ``list_databases`` under ``not_configured`` and refused by the other tools.
A non-empty path that does not exist fails at server start. Without a ``databases``
option the shipped databases under ``seeds/text2sql/`` are served.

Every call opens its own connection with ``mode=ro`` and ``PRAGMA query_only``; an
authorizer refuses writes, ATTACH and setting pragmas, and a progress handler stops a
statement at the call's time limit (ToolTimeout, code 2002).
"""
from __future__ import annotations

import logging
import re
import runpy
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from .base import Backend, BackendConfigError, ParamError, ToolContext, ToolError, ToolTimeout, tool

log = logging.getLogger(__name__)

_SHIPPED = {
    "retail": {
        "path": "seeds/text2sql/retail.sqlite",
        "description": "Northwind Trails, a chain of outdoor-equipment shops, 2023-2024: stores, employees, "
                       "customers, categories, suppliers, products, orders, order_items, payments "
                       "(and the view order_totals).",
    },
}
_BUILD_SCRIPT = "seeds/text2sql/build_db.py"

_WRITE_KEYWORDS = {"insert", "update", "delete", "replace", "upsert", "create", "drop", "alter", "attach",
                   "detach", "vacuum", "reindex", "analyze"}
# Pragmas that take an argument but only read (``PRAGMA table_info(orders)``).
_READ_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "database_list",
    "collation_list", "function_list", "module_list", "pragma_list", "compile_options",
}
_SIDE_EFFECT_PRAGMAS = {"optimize", "shrink_memory", "wal_checkpoint", "incremental_vacuum"}
_WRITE_ACTIONS = {
    getattr(sqlite3, n) for n in dir(sqlite3)
    if n.startswith(("SQLITE_CREATE_", "SQLITE_DROP_")) or n in {
        "SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_ALTER_TABLE", "SQLITE_ATTACH",
        "SQLITE_DETACH", "SQLITE_REINDEX", "SQLITE_ANALYZE",
    }
}
_COMMENT = re.compile(r"(--[^\n]*\n?|/\*.*?\*/)", re.S)
_PROGRESS_STEPS = 2000
_MAX_CELL_CHARS = 2000
_MAX_VALUE_BYTES = 16 * 1024 * 1024

_DB_ID = {"type": "string", "description": "Database id, as listed by text2sql:list_databases."}


class Text2SQLBackend(Backend):
    """Read-only SQL tools over the configured sqlite databases."""

    name = "text2sql"
    description = "Explore and query sqlite databases with read-only SQL"
    uses_sessions = False
    config_keys = frozenset({"databases", "max_rows", "max_rows_limit", "statement_timeout", "sample_rows"})

    def check_config(self) -> None:
        super().check_config()
        raw = self.config.get("databases")
        self.databases: dict[str, dict] = {}
        self.not_configured: dict[str, str] = {}
        if raw is None:
            raw = _SHIPPED
        if not isinstance(raw, dict):
            raise BackendConfigError("resource 'text2sql': 'databases' must be an object {db_id: path}")
        for db_id, entry in raw.items():
            if isinstance(entry, str):
                entry = {"path": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("path", ""), str):
                raise BackendConfigError(
                    f"resource 'text2sql': databases.{db_id} must be a path or {{\"path\": …, \"description\": …}}")
            path = entry.get("path", "").strip()
            if not path:
                self.not_configured[db_id] = "no path given (empty value; set the environment variable the config names)"
                continue
            full = Path(path).expanduser()
            if not full.is_absolute():
                full = self.context.project_dir / full
            shipped = raw is _SHIPPED
            if not full.is_file() and not shipped:
                raise BackendConfigError(f"resource 'text2sql': database '{db_id}' not found at {full}")
            self.databases[db_id] = {"path": full, "description": entry.get("description", "")}
        for key in ("max_rows", "max_rows_limit", "sample_rows"):
            if key in self.config and (not isinstance(self.config[key], int) or self.config[key] < 0):
                raise BackendConfigError(f"resource 'text2sql': {key} must be a non-negative integer")
        self.max_rows = int(self.config.get("max_rows", 100))
        self.max_rows_limit = int(self.config.get("max_rows_limit", 5000))
        self.sample_rows = int(self.config.get("sample_rows", 3))
        self.statement_timeout = float(self.config.get("statement_timeout", 30))
        if not self.databases and not self.not_configured:
            raise BackendConfigError("resource 'text2sql': 'databases' is empty")
        if self.not_configured:
            log.warning("text2sql: database(s) without a path, not served: %s", ", ".join(sorted(self.not_configured)))

    def warmup(self) -> dict:
        """Build a shipped database that is missing (a checkout without the .sqlite) into the data dir."""
        built = []
        for db_id, info in self.databases.items():
            if info["path"].is_file():
                continue
            if db_id in _SHIPPED and (self.context.project_dir / _BUILD_SCRIPT).is_file():
                target = self.context.data_dir / "text2sql" / f"{db_id}.sqlite"
                if not target.is_file():
                    module = runpy.run_path(str(self.context.project_dir / _BUILD_SCRIPT))
                    module["build"](target)
                info["path"] = target
                built.append(db_id)
            else:
                raise BackendConfigError(f"database '{db_id}' not found at {info['path']}")
        return {"databases": sorted(self.databases), "built": built, "not_configured": sorted(self.not_configured)}

    # -- tools -------------------------------------------------------------------
    @tool(
        "list_databases",
        "List the SQL databases you can query, with their tables and a short description.",
        default_timeout=10,
    )
    def list_databases(self, ctx: ToolContext) -> dict:
        out = []
        for db_id, info in sorted(self.databases.items()):
            with self._connect(db_id, ctx) as con:
                tables = [r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY type, name")]
            out.append({"db_id": db_id, "description": info["description"], "tables": tables})
        result: dict = {"databases": out}
        if self.not_configured:
            result["not_configured"] = [{"db_id": k, "reason": v} for k, v in sorted(self.not_configured.items())]
        return result

    @tool(
        "get_schema",
        "Show the schema of a database: for each table its columns (name, type, primary key, "
        "nullability), foreign keys, row count, CREATE statement and a few sample rows. "
        "Give 'tables' to see only some tables.",
        {
            "properties": {
                "db_id": _DB_ID,
                "tables": {"type": "array", "items": {"type": "string"},
                           "description": "Only these tables or views (default: all)."},
            },
            "required": ["db_id"],
        },
        default_timeout=15,
    )
    def get_schema(self, ctx: ToolContext, db_id: str, tables: list[str] | None = None) -> dict:
        with self._connect(db_id, ctx) as con:
            objects = {r[0]: (r[1], r[2]) for r in con.execute(
                "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name")}
            if tables:
                lookup = {name.lower(): name for name in objects}
                missing = [t for t in tables if t.lower() not in lookup]
                if missing:
                    raise ParamError("tables", f"no such table(s) in '{db_id}': {', '.join(missing)}; "
                                               f"tables: {', '.join(objects)}")
                names = [lookup[t.lower()] for t in tables]
            else:
                names = list(objects)
            out = [self._describe(con, name, *objects[name]) for name in names]
        return {"db_id": db_id, "tables": out}

    @tool(
        "execute",
        "Run one read-only SQL query (SQLite dialect: SELECT, WITH, VALUES, EXPLAIN or a read-only PRAGMA) "
        "and return the column names and rows. At most 'max_rows' rows come back; 'truncated' says "
        "whether there were more.",
        {
            "properties": {
                "db_id": _DB_ID,
                "query": {"type": "string", "minLength": 1, "description": "One SQL statement."},
                "max_rows": {"type": "integer", "minimum": 1,
                             "description": "Largest number of rows to return (default 100)."},
            },
            "required": ["db_id", "query"],
        },
        default_timeout=30,
    )
    def execute(self, ctx: ToolContext, db_id: str, query: str, max_rows: int | None = None) -> dict:
        stripped = _COMMENT.sub(" ", query).strip().rstrip(";").strip()
        if not stripped:
            raise ParamError("query", "is empty; give one SQL statement such as SELECT …")
        keyword = stripped.split(None, 1)[0].lower()
        if keyword in _WRITE_KEYWORDS:
            raise ToolError(
                f"the database '{db_id}' is read-only: {keyword.upper()} statements are not allowed; "
                "only SELECT, WITH, VALUES, EXPLAIN and read-only PRAGMA queries run here",
                {"error_type": "read_only"},
            )
        limit = min(max_rows or self.max_rows, self.max_rows_limit)
        budget = min(ctx.remaining, self.statement_timeout)
        started = time.monotonic()
        with self._connect(db_id, ctx) as con:
            deadline = started + budget
            timed_out = []

            def progress() -> int:
                if time.monotonic() > deadline:
                    timed_out.append(True)
                    return 1
                return 0

            con.set_progress_handler(progress, _PROGRESS_STEPS)
            try:
                cur = con.execute(query)
                rows, cut_for_size = _fetch(cur, limit + 1, ctx.max_output_bytes)
            except sqlite3.Error as err:
                self._raise_sql_error(con, db_id, err, timed_out, budget)
            columns = [d[0] for d in cur.description or []]
        truncated = len(rows) > limit
        rows = rows[:limit]
        result = {
            "db_id": db_id, "columns": columns, "rows": rows, "row_count": len(rows),
            "truncated": truncated or cut_for_size,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if cut_for_size:
            result["note"] = f"rows cut to fit the output limit of {ctx.max_output_bytes} bytes"
        elif truncated:
            result["note"] = f"more than {limit} rows; only the first {limit} are shown"
        return result

    # -- helpers -----------------------------------------------------------------
    def _connect(self, db_id: str, ctx: ToolContext) -> sqlite3.Connection:
        if not isinstance(db_id, str) or db_id not in self.databases:
            known = ", ".join(sorted(self.databases)) or "none"
            extra = f" ('{db_id}' is in the config but has no path)" if db_id in self.not_configured else ""
            raise ParamError("db_id", f"unknown database '{db_id}'{extra}; known databases: {known}")
        path = self.databases[db_id]["path"]
        uri = f"file:{quote(str(path))}?mode=ro"
        try:
            con = sqlite3.connect(uri, uri=True, timeout=max(0.1, min(5.0, ctx.remaining)),
                                  check_same_thread=False, isolation_level=None)
            con.execute("PRAGMA query_only = ON")
        except sqlite3.Error as err:
            raise ToolError(f"cannot open database '{db_id}': {err}") from None
        con.set_authorizer(_authorize)
        # No string, blob or row the query builds may be larger than this: a "read-only"
        # query such as SELECT zeroblob(1e9) must not take the server's memory.
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        return _Closing(con)

    def _describe(self, con: sqlite3.Connection, name: str, kind: str, ddl: str) -> dict:
        q = _quote_ident(name)
        columns = [{"name": r[1], "type": r[2], "not_null": bool(r[3]), "default": r[4], "primary_key": bool(r[5])}
                   for r in con.execute(f"PRAGMA table_info({q})")]
        fks = [{"column": r[3], "references_table": r[2], "references_column": r[4]}
               for r in con.execute(f"PRAGMA foreign_key_list({q})")]
        info = {"name": name, "type": kind, "columns": columns, "foreign_keys": fks,
                "row_count": con.execute(f"SELECT COUNT(*) FROM {q}").fetchone()[0], "ddl": ddl}
        if self.sample_rows:
            cur = con.execute(f"SELECT * FROM {q} LIMIT {self.sample_rows}")
            info["sample_rows"] = [[_cell(v) for v in row] for row in cur.fetchall()]
        return info

    def _raise_sql_error(self, con, db_id: str, err: sqlite3.Error, timed_out: list, budget: float):
        message = str(err)
        if timed_out:
            raise ToolTimeout(f"the query ran longer than its time limit of {budget:.3g} s and was stopped",
                              {"timeout": budget}) from None
        if isinstance(err, sqlite3.DatabaseError) and ("not authorized" in message or "readonly" in message):
            raise ToolError(f"the database '{db_id}' is read-only; the statement tries to change it "
                            f"or attach another database ({message})", {"error_type": "read_only"}) from None
        data: dict = {"error_type": "sql_error", "sqlite_error": message}
        if "too big" in message:
            message += f" (a value or row may take at most {_MAX_VALUE_BYTES} bytes here)"
        if "no such table" in message:
            data["tables"] = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")]
            message += f" (tables: {', '.join(data['tables'])})"
        raise ToolError(f"SQL error: {message}", data) from None


class _Closing:
    """Context manager that closes the connection (sqlite3's own only ends transactions)."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def _authorize(action, arg1, arg2, db_name, trigger):
    if action in _WRITE_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _SIDE_EFFECT_PRAGMAS or (arg2 is not None and name not in _READ_PRAGMAS):
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell(value):
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    if isinstance(value, str) and len(value) > _MAX_CELL_CHARS:
        return value[:_MAX_CELL_CHARS] + f"… [{len(value)} chars]"
    return value


def _fetch(cur: sqlite3.Cursor, count: int, max_bytes: int) -> tuple[list[list], bool]:
    """Fetch up to ``count`` rows (cells shortened by :func:`_cell`), stopping before the
    rows' rough JSON size passes ``max_bytes``; returns (rows, cut_for_size). Rows are
    fetched one at a time, so a query over huge values never holds more than one of
    them in the server's memory."""
    rows: list[list] = []
    total = 0
    while len(rows) < count:
        row = cur.fetchone()
        if row is None:
            break
        cells = [_cell(v) for v in row]
        total += sum(len(str(v)) + 4 for v in cells) + 4
        if total > max_bytes:
            return rows, True
        rows.append(cells)
    return rows, False


__all__ = ["Text2SQLBackend"]
