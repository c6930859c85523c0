"""text2sql's authorizer is an allow-list: what a hostile query tries beyond reading the
database (pointer leaks, extensions, attaching files, writes, pragma writes, temp
objects, internal virtual tables) is refused with an error naming it, while ordinary
analytical SQL keeps working. Unit tests on the backend plus a pass through the API."""
from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path

import pytest

from agentflow.tools.base import BackendContext, ToolContext, ToolError
from agentflow.tools.text2sql import _ALLOWED_FUNCTIONS, _READ_TABLES, Text2SQLBackend
from tests.support.server import start_server

REPO = Path(__file__).resolve().parents[2]
DB = REPO / "seeds" / "text2sql" / "retail.sqlite"


@pytest.fixture(scope="module")
def backend() -> Text2SQLBackend:
    ctx = BackendContext(data_dir=REPO / ".agentflow", roots=[REPO / "seeds"], project_dir=REPO)
    return Text2SQLBackend({}, ctx)


def call() -> ToolContext:
    return ToolContext(worker_id="hostile", timeout=10, max_output_bytes=1 << 16)


def refused(backend, query: str) -> ToolError:
    before = hashlib.sha256(DB.read_bytes()).hexdigest()
    with pytest.raises(ToolError) as err:
        backend.execute(call(), db_id="retail", query=query)
    assert hashlib.sha256(DB.read_bytes()).hexdigest() == before
    return err.value


# -- functions -------------------------------------------------------------------------

@pytest.mark.parametrize("query, name", [
    ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),  # leaks a server pointer
    ("SELECT fts3_tokenizer('mine', x'0000000000000000')", "fts3_tokenizer"),  # registers one
    ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
    ("SELECT fts5(NULL)", "fts5"),
    ("SELECT fts5_source_id()", "fts5_source_id"),
    ("SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get"),
    ("SELECT sqlite_source_id()", "sqlite_source_id"),
    ("SELECT rtreenode(2, x'00')", "rtreenode"),
    ("SELECT first_name FROM customers WHERE upper(fts3_tokenizer('porter')) IS NOT NULL", "fts3_tokenizer"),
    ("WITH t AS (SELECT load_extension('x') AS v) SELECT v FROM t", "load_extension"),
])
def test_denied_functions_are_named(backend, query, name):
    err = refused(backend, query)
    assert err.data["error_type"] == "not_allowed", err.data
    assert err.data["denied"] == {"kind": "function", "name": name}
    assert f"the function {name}() is not allowed" in err.message


@pytest.mark.parametrize("query, name", [
    ("SELECT readfile('/etc/passwd')", "readfile"),
    ("SELECT writefile('/tmp/x', 'y')", "writefile"),
    ("SELECT edit('x')", "edit"),
    ("SELECT sqlite_offset(customer_id) FROM customers", "sqlite_offset"),
])
def test_functions_this_build_lacks_are_refused_and_not_listed(backend, query, name):
    # Not compiled into Python's SQLite here (SQLite answers "no such function" before
    # asking the authorizer); kept off the allow-list so a build that has them stays safe.
    err = refused(backend, query)
    assert name in err.message and name not in _ALLOWED_FUNCTIONS


def test_unknown_sqlite_functions_are_not_allowed_by_default():
    # Every function the server's SQLite offers that the list leaves out stays refused:
    # the list is the authority, not the build.
    con = sqlite3.connect(":memory:")
    offered = {r[0] for r in con.execute("SELECT name FROM pragma_function_list")}
    for risky in ("fts3_tokenizer", "load_extension", "fts5", "sqlite_compileoption_used", "optimize"):
        assert risky not in _ALLOWED_FUNCTIONS
        assert risky in offered or risky == "optimize"


# -- actions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("query, kind, name", [
    ("ATTACH DATABASE '/tmp/agentflow_hostile_attach.db' AS other", "action", "ATTACH"),
    ("ATTACH ':memory:' AS m", "action", "ATTACH"),
    ("DETACH DATABASE main", "action", "DETACH"),
    ("PRAGMA query_only = OFF", "pragma", "query_only = OFF"),
    ("PRAGMA writable_schema = ON", "pragma", "writable_schema = ON"),
    ("PRAGMA journal_mode = DELETE", "pragma", "journal_mode = DELETE"),
    ("PRAGMA database_list", "pragma", "database_list"),
    ("PRAGMA user_version = 7", "pragma", "user_version = 7"),
    ("BEGIN", "action", "TRANSACTION"),
    ("SAVEPOINT s1", "action", "SAVEPOINT"),
])
def test_denied_actions_and_pragmas_are_named(backend, query, kind, name):
    err = refused(backend, query)
    assert err.data["error_type"] == "read_only", err.data
    assert err.data["denied"] == {"kind": kind, "name": name}
    assert "read-only" in err.message and name.split(" ")[0] in err.message
    assert err.data["denied"]["name"] == name
    assert not Path("/tmp/agentflow_hostile_attach.db").exists()


@pytest.mark.parametrize("query", [
    "CREATE TEMP TABLE t (x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON customers BEGIN SELECT 1; END",
    "DROP TABLE customers",
    "CREATE VIRTUAL TABLE temp.t USING fts3tokenize(simple)",
    "INSERT INTO categories (name, description) VALUES ('a', 'b')",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "REPLACE INTO stores VALUES (1, 'x', 'x', 'x', '2024-01-01', 1)",
])
def test_writes_and_schema_changes_are_read_only_errors(backend, query):
    err = refused(backend, query)
    assert err.data["error_type"] == "read_only" and "read-only" in err.message


@pytest.mark.parametrize("query", [
    "SELECT * FROM dbstat",  # page-level layout of the file
    "SELECT sql FROM sqlite_stmt",  # the connection's statements
    "SELECT * FROM pragma_database_list",  # the server's file paths
    "SELECT * FROM pragma_compile_options",
    "SELECT * FROM pragma_function_list",
])
def test_internal_virtual_tables_are_refused(backend, query):
    err = refused(backend, query)
    assert err.data["error_type"] == "not_allowed" and err.data["denied"]["kind"] == "table", err.data
    assert "virtual table" in err.message and "is not allowed" in err.message


# -- what still works -------------------------------------------------------------------------

ANALYTICAL = {
    "join + group by + having": (
        "SELECT c.loyalty_tier, COUNT(DISTINCT o.order_id) AS n, ROUND(AVG(oi.quantity), 2) "
        "FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
        "JOIN order_items oi ON oi.order_id = o.order_id GROUP BY 1 HAVING n > 0 ORDER BY n DESC"),
    "window functions": (
        "SELECT order_id, ROW_NUMBER() OVER w, RANK() OVER w, DENSE_RANK() OVER w, "
        "LAG(order_id) OVER w, LEAD(order_id, 1, 0) OVER w, FIRST_VALUE(order_id) OVER w, "
        "NTILE(4) OVER w, CUME_DIST() OVER w, PERCENT_RANK() OVER w, SUM(order_id) OVER w "
        "FROM orders WINDOW w AS (PARTITION BY store_id ORDER BY order_date) LIMIT 5"),
    "cte": "WITH s AS (SELECT store_id, COUNT(*) n FROM orders GROUP BY 1) SELECT MAX(n), MIN(n), TOTAL(n) FROM s",
    "recursive cte": (
        "WITH RECURSIVE chain(id, depth) AS (SELECT employee_id, 0 FROM employees WHERE manager_id IS NULL "
        "UNION ALL SELECT e.employee_id, depth + 1 FROM employees e JOIN chain ON e.manager_id = chain.id) "
        "SELECT MAX(depth) FROM chain"),
    "json": ("SELECT json_extract('{\"a\": [1, 2]}', '$.a[1]'), '{\"b\": 3}' ->> '$.b', "
             "json_array_length(json_group_array(store_id)), json_object('k', 1) FROM stores"),
    "json_each": "SELECT SUM(value) FROM json_each('[1, 2, 3]')",
    "dates": ("SELECT date(order_date, '+1 month'), strftime('%Y-%m', order_date), julianday('2024-01-02') "
              "- julianday('2024-01-01'), datetime('2024-01-01 10:00', '+2 hours'), unixepoch('1970-01-02') "
              "FROM orders LIMIT 1"),
    "strings": ("SELECT printf('%05.1f', unit_price), upper(substr(name, 1, 3)), length(name), "
                "replace(name, ' ', '_'), trim('  x '), instr(name, 'a'), coalesce(NULL, 'y'), ifnull(NULL, 1), "
                "nullif(1, 1), iif(unit_price > 10, 'hi', 'lo'), typeof(unit_price), hex('a'), quote('x') "
                "FROM products WHERE name LIKE '%a%' OR name GLOB '*e*' LIMIT 3"),
    "math": "SELECT round(sqrt(16) + pow(2, 3) + floor(2.7) + ceil(2.1) + abs(-1) + log10(100) + pi() * 0, 3)",
    "case, cast, between, exists": (
        "SELECT CASE WHEN unit_price BETWEEN 1 AND 50 THEN 'cheap' ELSE 'dear' END, CAST(unit_price AS INTEGER) "
        "FROM products p WHERE EXISTS (SELECT 1 FROM order_items oi WHERE oi.product_id = p.product_id) LIMIT 2"),
    "view": "SELECT COUNT(*) FROM order_totals",
    "schema": "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    "pragma table-valued": "SELECT name FROM pragma_table_info('orders') ORDER BY cid",
    "pragma": "PRAGMA foreign_key_list(orders)",
    "explain": "EXPLAIN QUERY PLAN SELECT * FROM orders WHERE order_id = 1",
    "values + current date": "VALUES (date('now') = current_date, sqlite_version() IS NOT NULL)",
}


@pytest.mark.parametrize("query", ANALYTICAL.values(), ids=ANALYTICAL.keys())
def test_analytical_queries_still_work(backend, query):
    out = backend.execute(call(), db_id="retail", query=query)
    assert out["row_count"] >= 1, out


@pytest.mark.parametrize("table", sorted(_READ_TABLES))
def test_every_allowed_virtual_table_is_usable(backend, table):
    # Their first use asks the authorizer for an UPDATE of sqlite_master; the backend warms
    # them up before the authorizer is set, so the allow-list never needs to allow UPDATE.
    if table.startswith("jsonb_") and sqlite3.sqlite_version_info < (3, 45):
        pytest.skip(f"{table} needs SQLite 3.45")
    no_arg = ("pragma_collation_list", "pragma_table_list", "pragma_foreign_key_check")
    arg = "('[1]')" if "json" in table else ("('orders')" if table.startswith("pragma_") and table not in no_arg
                                             else "")
    out = backend.execute(call(), db_id="retail", query=f"SELECT * FROM {table}{arg}")
    assert out["columns"], out


def test_get_schema_still_works(backend):
    out = backend.get_schema(call(), db_id="retail")
    names = {t["name"] for t in out["tables"]}
    assert {"orders", "order_totals"} <= names
    orders = next(t for t in out["tables"] if t["name"] == "orders")
    assert orders["foreign_keys"] and orders["sample_rows"]


# -- through the API -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("t2s-hostile"),
                          config={"resources": {"text2sql": {"config": {"statement_timeout": 5}}}})
    yield server
    server.stop()


@pytest.mark.parametrize("query, text", [
    ("SELECT hex(fts3_tokenizer('simple'))", "the function fts3_tokenizer() is not allowed"),
    ("SELECT load_extension('libc.so.6')", "the function load_extension() is not allowed"),
    ("ATTACH DATABASE ':memory:' AS x", "read-only: ATTACH"),
])
def test_api_refusals_are_tool_errors(srv, query, text):
    out = srv.post("/execute", {"worker_id": f"t2s-{uuid.uuid4().hex[:6]}", "action": "text2sql:execute",
                                "params": {"db_id": "retail", "query": query}}).json()
    assert out["code"] == 2001 and text in out["message"], out
    ok = srv.post("/execute", {"worker_id": "t2s-ok", "action": "text2sql:execute",
                               "params": {"db_id": "retail", "query": "SELECT COUNT(*) FROM orders"}}).json()
    assert ok["code"] == 0 and ok["data"]["rows"][0][0] > 0
