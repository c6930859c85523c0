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

Every call opens its own connection with ``mode=ro``, ``PRAGMA query_only`` and no
room for attached databases. An allow-list authorizer (:class:`_Authorizer`) lets a
statement read the database's own tables and views, call the listed scalar, aggregate,
window, date/time, JSON and math functions, run schema pragmas and recursive CTEs, and
refuses everything else (writes, ATTACH, pragma writes, ``load_extension``,
``fts3_tokenizer``, …) with an error naming what was refused. A progress handler stops a
statement at the call's time limit (ToolTimeout, code 2002).
"""
from __future__ import annotations

import logging
import re
import runpy
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple
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

# The authorizer is an allow-list: an action, function, pragma or virtual table that is
# not named here is refused, so whatever a newer SQLite adds stays off until reviewed.
# Functions a query needs: core scalar, aggregate, window, date/time, JSON and math.
# Left out on purpose: load_extension, fts3_tokenizer (leaks / registers raw pointers),
# fts5 and fts5_source_id (API pointer), optimize / matchinfo / offsets (FTS3 internals),
# rtree* checks, sqlite_offset (file offsets), sqlite_compileoption_* / sqlite_source_id /
# sqlite_log (build fingerprinting, log writes), changes / total_changes /
# last_insert_rowid (meaningless read-only), subtype, and the CLI's readfile, writefile,
# edit and fsdir (not in Python's sqlite, named so a future build cannot bring them).
_SCALAR_FUNCTIONS = {
    "abs", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex", "if", "ifnull", "iif", "instr",
    "length", "like", "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length", "printf",
    "quote", "random", "randomblob", "replace", "round", "rtrim", "sign", "soundex", "sqlite_version", "substr",
    "substring", "trim", "typeof", "unhex", "unicode", "unistr", "unistr_quote", "unlikely", "upper", "zeroblob",
}
_AGGREGATE_FUNCTIONS = {"avg", "count", "group_concat", "string_agg", "sum", "total", "median", "percentile",
                        "percentile_cont", "percentile_disc"}
_WINDOW_FUNCTIONS = {"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
                     "first_value", "last_value", "nth_value"}
_DATE_FUNCTIONS = {"date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff", "current_date",
                   "current_time", "current_timestamp"}
_MATH_FUNCTIONS = {"acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh",
                   "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians",
                   "sin", "sinh", "sqrt", "tan", "tanh", "trunc"}
_JSON_FUNCTIONS = {"->", "->>", "json", "json_array", "json_array_length", "json_error_position", "json_extract",
                   "json_group_array", "json_group_object", "json_insert", "json_object", "json_patch", "json_pretty",
                   "json_quote", "json_remove", "json_replace", "json_set", "json_type", "json_valid"}
_JSON_FUNCTIONS |= {"jsonb" + name[4:] for name in _JSON_FUNCTIONS if name.startswith("json")}
# Full-text search over FTS tables a configured database may hold (read-only ranking/markup).
_FTS_FUNCTIONS = {"match", "bm25", "highlight", "snippet"}
_ALLOWED_FUNCTIONS = frozenset(_SCALAR_FUNCTIONS | _AGGREGATE_FUNCTIONS | _WINDOW_FUNCTIONS | _DATE_FUNCTIONS
                               | _MATH_FUNCTIONS | _JSON_FUNCTIONS | _FTS_FUNCTIONS)
# Pragmas a query may run, all read-only schema views (get_schema uses table_info and
# foreign_key_list). database_list (server file paths), function_list / module_list /
# compile_options (fingerprinting) and integrity_check (full scans) are left out.
_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                           "foreign_key_list", "foreign_key_check", "collation_list"})
# Virtual tables a query may read besides the database's own objects: the schema tables,
# JSON table-valued functions and the pragma_* tables of the pragmas above. Not dbstat,
# sqlite_stmt, sqlite_dbpage, fts3tokenize, …
_READ_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema",
                          "json_each", "json_tree", "jsonb_each", "jsonb_tree"}
                         | {f"pragma_{name}" for name in _READ_PRAGMAS})
_ACTION_NAMES = {getattr(sqlite3, f"SQLITE_{n}"): n.replace("_", " ") for n in (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX",
    "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA",
    "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
    "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE") if hasattr(sqlite3, f"SQLITE_{n}")}
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
        "Give 'tables' (or 'table_names') to see only some tables.",
        {
            "properties": {
                "db_id": _DB_ID,
                "tables": {"type": "array", "items": {"type": "string"},
                           "description": "Only these tables or views (default: all)."},
                "table_names": {"type": "array", "items": {"type": "string"},
                                "description": "Same as 'tables' (AgentFlow's name for it)."},
            },
            "required": ["db_id"],
        },
        default_timeout=15,
    )
    def get_schema(self, ctx: ToolContext, db_id: str, tables: list[str] | None = None,
                   table_names: list[str] | None = None) -> dict:
        if tables and table_names and [t.lower() for t in tables] != [t.lower() for t in table_names]:
            raise ParamError("table_names", "give either 'tables' or 'table_names' (the same list), not two lists")
        tables = tables or table_names
        param = "tables" if tables is not None and table_names is None else "table_names"
        with self._connect(db_id, ctx) as con:
            objects = {r[0]: (r[1], r[2]) for r in con.execute(
                "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name")}
            if tables:
                lookup = {name.lower(): name for name in objects}
                missing = [t for t in tables if t.lower() not in lookup]
                if missing:
                    raise ParamError(param, f"no such table(s) in '{db_id}': {', '.join(missing)}; "
                                            f"tables: {', '.join(objects)}")
                names = [lookup[t.lower()] for t in tables]
            else:
                names = list(objects)
            out = [self._describe(con, name, *objects[name]) for name in names]
        return {"db_id": db_id, "tables": out, "schema": compact_schema(out)}

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
                {"error_type": "read_only", "denied": {"kind": "action", "name": keyword.upper()}},
            )
        limit = min(max_rows or self.max_rows, self.max_rows_limit)
        budget = min(ctx.remaining, self.statement_timeout)
        started = time.monotonic()
        connection = self._connect(db_id, ctx, query)
        with connection as con:
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
                self._raise_sql_error(con, db_id, err, timed_out, budget, connection.authorizer.denied)
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
    def _connect(self, db_id: str, ctx: ToolContext, query: str = "") -> _Closing:
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
            tables = frozenset(r[0].lower() for r in con.execute("SELECT name FROM sqlite_master"))
            _warm_virtual_tables(con, query)
        except sqlite3.Error as err:
            raise ToolError(f"cannot open database '{db_id}': {err}") from None
        authorizer = _Authorizer(tables)
        con.set_authorizer(authorizer)
        # Defence in depth behind the authorizer: no database can be attached at all.
        con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        # No string, blob or row the query builds may be larger than this: a "read-only"
        # query such as SELECT zeroblob(1e9) must not take the server's memory.
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        return _Closing(con, authorizer)

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

    def _raise_sql_error(self, con, db_id: str, err: sqlite3.Error, timed_out: list, budget: float,
                         denied: Denied | None = None):
        message = str(err)
        if timed_out:
            raise ToolTimeout(f"the query ran longer than its time limit of {budget:.3g} s and was stopped",
                              {"timeout": budget}) from None
        if denied is not None:  # one statement per connection: the refusal is why it failed
            _raise_denied(db_id, denied)
        if isinstance(err, sqlite3.DatabaseError) and any(
                text in message for text in ("not authorized", "readonly", "too many attached")):
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


def compact_schema(tables: list[dict]) -> dict:
    """The tables of :meth:`Text2SQLBackend.get_schema` keyed by name, each with only its
    columns (``name``, ``type``, ``pk``) and foreign keys (``from_col``, ``to_table``,
    ``to_col``): the shape AgentFlow's reference callers read as ``schema``."""
    return {t["name"]: {"columns": [{"name": c["name"], "type": c["type"], "pk": c["primary_key"]}
                                    for c in t["columns"]],
                        "foreign_keys": [{"from_col": f["column"], "to_table": f["references_table"],
                                          "to_col": f["references_column"]} for f in t["foreign_keys"]]}
            for t in tables}


def _warm_virtual_tables(con: sqlite3.Connection, query: str) -> None:
    """Use each allowed virtual table the query names once, before the authorizer is set.

    SQLite's first use of an eponymous virtual table on a connection asks the authorizer
    for an UPDATE of sqlite_master (schema bookkeeping, nothing is written); done here,
    the authorizer never has to allow an UPDATE. A table name cannot be computed in SQL,
    so a name absent from the text is not used by the query."""
    text = query.lower()
    for name in _READ_TABLES:
        if name in text and not name.startswith("sqlite_"):
            args = "('orders')" if name.startswith("pragma_") and name != "pragma_collation_list" else ""
            try:
                con.execute(f"SELECT 1 FROM {name}{args} WHERE 0").fetchall()
            except sqlite3.Error:
                pass  # e.g. a build without that table: the query's own error says so


def _raise_denied(db_id: str, denied: Denied) -> None:
    data = {"error_type": "read_only" if denied.read_only else "not_allowed",
            "denied": {"kind": denied.kind, "name": denied.name}}
    if denied.read_only:
        raise ToolError(f"the database '{db_id}' is read-only: {denied.describe()} is not allowed; only SELECT, "
                        "WITH, VALUES, EXPLAIN and schema PRAGMAs (table_info, foreign_key_list, …) run here",
                        data) from None
    raise ToolError(f"{denied.describe()} is not allowed in text2sql queries (allowed: core scalar, aggregate, "
                    "window, date/time, JSON and math functions, and reads of the database's tables and views)",
                    data) from None


class _Closing:
    """Context manager that closes the connection (sqlite3's own only ends transactions)."""

    def __init__(self, con: sqlite3.Connection, authorizer: _Authorizer):
        self.con = con
        self.authorizer = authorizer

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


class Denied(NamedTuple):
    """What the authorizer refused: ``kind`` is function, pragma, table or action."""

    kind: str
    name: str

    @property
    def read_only(self) -> bool:
        """A write-like refusal (reported as "read-only"), not a refused read or function."""
        return self.kind in ("pragma", "action")

    def describe(self) -> str:
        if self.kind == "table":
            return f"reading {self.name}" if " " in self.name else f"reading the virtual table {self.name}"
        return {"function": f"the function {self.name}()", "pragma": f"PRAGMA {self.name}"}.get(self.kind, self.name)


class _Authorizer:
    """sqlite3 authorizer callback allowing only reads of the database's own objects,
    the listed functions, pragmas and virtual tables, and recursive CTEs. The last
    refusal is kept so the error can name it."""

    def __init__(self, tables: frozenset[str]):
        self.tables = tables
        self.denied: Denied | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db_name: str | None,
                 trigger: str | None) -> int:
        denied = self._check(action, arg1, arg2, db_name)
        if denied is None:
            return sqlite3.SQLITE_OK
        self.denied = denied
        return sqlite3.SQLITE_DENY

    def _check(self, action: int, arg1: str | None, arg2: str | None, db_name: str | None) -> Denied | None:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return None
        if action == sqlite3.SQLITE_READ:
            table = (arg1 or "").lower()
            # db_name None: a column of a CTE or subquery, not a stored table.
            if db_name is None or table in self.tables or table in _READ_TABLES:
                return None
            return Denied("table", arg1 or "")
        if action == sqlite3.SQLITE_UPDATE and (arg1 or "").lower() == "sqlite_master":
            # SQLite checks this when a virtual table is first used on a connection; the
            # allowed ones are warmed up before the authorizer is set (_warm_virtual_tables).
            return Denied("table", "a virtual table not in the allowed list")
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            return None if name in _ALLOWED_FUNCTIONS else Denied("function", arg2 or "")
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            return None if name in _READ_PRAGMAS else Denied("pragma", f"{arg1} = {arg2}" if arg2 else str(arg1))
        return Denied("action", _ACTION_NAMES.get(action, f"authorizer action {action}"))


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


__all__ = ["Text2SQLBackend", "compact_schema"]
