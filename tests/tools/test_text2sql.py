"""text2sql backend: unit tests on the backend, the shipped data and the reference config."""
from __future__ import annotations

import hashlib
import json
import runpy
import sqlite3
import uuid
from pathlib import Path

import pytest

from agentflow.config import load_server_config
from agentflow.tools.base import BackendConfigError, BackendContext, ParamError, ToolContext, ToolError, ToolTimeout
from agentflow.tools.text2sql import Text2SQLBackend
from tests.fixtures import REFERENCE_ROOTS, root_id

REPO = Path(__file__).resolve().parents[2]
DB = REPO / "seeds" / "text2sql" / "retail.sqlite"
CONFIG = {"resources": {"text2sql": {"config": {"statement_timeout": 1}}}}


def make(config=None, tmp_path=None) -> Text2SQLBackend:
    ctx = BackendContext(data_dir=tmp_path or REPO / ".agentflow", roots=[REPO / "seeds"], project_dir=REPO)
    return Text2SQLBackend(config or {}, ctx)


def call_ctx(timeout: float = 10, max_output_bytes: int = 65536) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=max_output_bytes)


@pytest.fixture(scope="module")
def backend():
    return make()


def test_list_databases_shows_shipped_retail(backend):
    out = backend.list_databases(call_ctx())
    (db,) = out["databases"]
    assert db["db_id"] == "retail"
    assert {"customers", "orders", "order_items", "products", "stores", "order_totals"} <= set(db["tables"])
    assert "not_configured" not in out


def test_get_schema_columns_foreign_keys_and_samples(backend):
    out = backend.get_schema(call_ctx(), db_id="retail", tables=["order_items", "ORDERS"])
    items, orders = out["tables"]
    assert items["name"] == "order_items" and orders["name"] == "orders"
    assert {fk["references_table"] for fk in items["foreign_keys"]} == {"orders", "products"}
    assert [c["name"] for c in items["columns"]][:3] == ["order_id", "product_id", "quantity"]
    assert items["row_count"] > 5000 and len(items["sample_rows"]) == 3
    assert orders["ddl"].startswith("CREATE TABLE orders")
    assert len(backend.get_schema(call_ctx(), db_id="retail")["tables"]) == 10


def test_get_schema_missing_table_names_it(backend):
    with pytest.raises(ParamError, match="no_such_table") as err:
        backend.get_schema(call_ctx(), db_id="retail", tables=["customers", "no_such_table"])
    assert "customers" in str(err.value)  # lists the real tables


def test_execute_rows_columns_and_truncation(backend):
    out = backend.execute(call_ctx(), db_id="retail", query="SELECT customer_id, email FROM customers ORDER BY 1",
                          max_rows=5)
    assert out["columns"] == ["customer_id", "email"]
    assert [r[0] for r in out["rows"]] == [1, 2, 3, 4, 5]
    assert out["truncated"] is True and out["row_count"] == 5
    small = backend.execute(call_ctx(), db_id="retail", query="SELECT COUNT(*) AS n FROM stores;")
    assert small["rows"] == [[6]] and small["truncated"] is False


def test_execute_caps_rows_to_output_size(backend):
    out = backend.execute(call_ctx(max_output_bytes=2000), db_id="retail", query="SELECT * FROM customers",
                          max_rows=500)
    assert out["truncated"] is True and 0 < out["row_count"] < 50
    assert "output limit" in out["note"]


@pytest.mark.parametrize("query", [
    "INSERT INTO stores VALUES (99, 'x', 'x', 'x', '2024-01-01', 1)",
    "update products set unit_price = 0",
    "DELETE FROM orders",
    "DROP TABLE customers",
    "ATTACH DATABASE '/tmp/agentflow_t2s_attach.db' AS other",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "WITH x AS (SELECT 1) INSERT INTO categories (name, description) SELECT 'a', 'b' FROM x",
    "CREATE TEMP TABLE t (x)",
    "VACUUM INTO '/tmp/agentflow_t2s_vacuum.db'",
])
def test_writes_are_refused_as_read_only(backend, query):
    before = hashlib.sha256(DB.read_bytes()).hexdigest()
    with pytest.raises(ToolError, match="read-only") as err:
        backend.execute(call_ctx(), db_id="retail", query=query)
    assert not isinstance(err.value, ToolTimeout)
    assert err.value.data["error_type"] == "read_only"
    assert hashlib.sha256(DB.read_bytes()).hexdigest() == before
    assert not Path("/tmp/agentflow_t2s_attach.db").exists() and not Path("/tmp/agentflow_t2s_vacuum.db").exists()


def test_read_only_pragmas_run(backend):
    out = backend.execute(call_ctx(), db_id="retail", query="PRAGMA table_info(orders)")
    assert "order_date" in [r[1] for r in out["rows"]]


def test_bad_sql_gives_sqlite_message(backend):
    with pytest.raises(ToolError, match="syntax error"):
        backend.execute(call_ctx(), db_id="retail", query="SELEC * FROM customers")
    with pytest.raises(ToolError, match="no such table: clients") as err:
        backend.execute(call_ctx(), db_id="retail", query="SELECT * FROM clients")
    assert "customers" in err.value.data["tables"]
    with pytest.raises(ToolError, match="one statement"):
        backend.execute(call_ctx(), db_id="retail", query="SELECT 1; SELECT 2")


@pytest.mark.parametrize("query", ["", "   ", "-- only a comment", ";"])
def test_empty_query_is_a_param_error(backend, query):
    with pytest.raises(ParamError, match="empty"):
        backend.execute(call_ctx(), db_id="retail", query=query)


def test_unknown_db_id_lists_known_ids(backend):
    with pytest.raises(ParamError, match="unknown database 'shop'.*retail"):
        backend.execute(call_ctx(), db_id="shop", query="SELECT 1")


def test_long_query_times_out():
    backend = make({"statement_timeout": 0.3})
    query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(ToolTimeout, match="time limit"):
        backend.execute(call_ctx(), db_id="retail", query=query)
    with pytest.raises(ToolTimeout):  # the call's own timeout counts too
        make().execute(call_ctx(timeout=0.3), db_id="retail", query=query)


def test_config_paths_and_errors(tmp_path):
    with pytest.raises(BackendConfigError, match="unknown option.*colour"):
        make({"colour": "red"})
    with pytest.raises(BackendConfigError, match="'missing' not found"):
        make({"databases": {"missing": str(tmp_path / "nope.sqlite")}})
    backend = make({"databases": {"retail": "seeds/text2sql/retail.sqlite", "music": "", "hr": {"path": " "}}})
    listed = backend.list_databases(call_ctx())
    assert [d["db_id"] for d in listed["databases"]] == ["retail"]
    assert [d["db_id"] for d in listed["not_configured"]] == ["hr", "music"]
    with pytest.raises(ParamError, match="'music' is in the config but has no path"):
        backend.get_schema(call_ctx(), db_id="music")


def test_warmup_builds_a_missing_shipped_database(tmp_path):
    backend = make(tmp_path=tmp_path)
    backend.databases["retail"]["path"] = tmp_path / "absent.sqlite"  # as in a checkout without the .sqlite
    info = backend.warmup()
    assert info["built"] == ["retail"]
    assert backend.execute(call_ctx(), db_id="retail", query="SELECT COUNT(*) FROM stores")["rows"] == [[6]]


def test_build_script_reproduces_the_shipped_database(tmp_path):
    build = runpy.run_path(str(REPO / "seeds" / "text2sql" / "build_db.py"))["build"]
    fresh = build(tmp_path / "retail.sqlite")
    dump = lambda p: list(sqlite3.connect(p).iterdump())  # noqa: E731
    assert dump(fresh) == dump(DB)
    assert DB.stat().st_size < 2 * 1024 * 1024


def test_benchmark_answers_match_the_shipped_database(backend):
    module = runpy.run_path(str(REPO / "seeds" / "text2sql" / "build_db.py"))
    records = [json.loads(line) for line in (REPO / "benchmark" / "text2sql.jsonl").read_text().splitlines()]
    assert len(records) >= 20 and len({r["id"] for r in records}) == len(records)
    for rec in records:
        assert set(rec) >= {"id", "question", "answer", "kwargs", "sql"}
        out = backend.execute(call_ctx(), **rec["kwargs"], query=rec["sql"])
        assert module["format_answer"]([tuple(r) for r in out["rows"]]) == rec["answer"], rec["id"]


def test_seeds_file():
    seeds = [json.loads(line) for line in (REPO / "seeds" / "text2sql" / "seeds.jsonl").read_text().splitlines()]
    assert seeds and all(s["content"] and s["kwargs"]["db_id"] == "retail" for s in seeds)


def test_shipped_config_loads():
    cfg = load_server_config(REPO / "configs" / "sandbox-server" / "text2sql.json", env={})
    backend = Text2SQLBackend(cfg.resources["text2sql"], BackendContext(REPO / ".agentflow", [], project_dir=REPO))
    assert list(backend.databases) == ["retail"]


@pytest.mark.parametrize("root", REFERENCE_ROOTS, ids=root_id)
def test_reference_config_empty_paths_mean_not_configured(root):
    REFERENCE = root / "configs" / "sandbox-server" / "text2sql_config.json"
    cfg = load_server_config(REFERENCE, env={})
    backend = Text2SQLBackend(cfg.resources["text2sql"], BackendContext(REPO / ".agentflow", [], project_dir=REPO))
    assert backend.databases == {}
    listed = backend.list_databases(call_ctx())
    assert listed["databases"] == []
    assert {d["db_id"] for d in listed["not_configured"]} >= {"retail", "chinook", "sakila"}
    with pytest.raises(ParamError, match="has no path"):
        backend.execute(call_ctx(), db_id="retail", query="SELECT 1")
    # With the variable set, the reference config serves our database.
    cfg = load_server_config(REFERENCE, env={"TEXT2SQL_RETAIL_DB_PATH": str(DB)})
    backend = Text2SQLBackend(cfg.resources["text2sql"], BackendContext(REPO / ".agentflow", [], project_dir=REPO))
    assert backend.execute(call_ctx(), db_id="retail", query="SELECT COUNT(*) FROM customers")["rows"] == [[700]]


# -- through the real server (POST /execute) -------------------------------------------
def run(server, action, params, **extra):
    body = {"worker_id": f"t2s-{uuid.uuid4().hex[:8]}", "action": action, "params": params, **extra}
    return server.post("/execute", body).json()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server with only this backend enabled."""
    from tests.support.server import start_server

    server = start_server(tmp_path_factory.mktemp("srv"), config=CONFIG, workers=1, threads=4)
    yield server
    server.stop()


def test_tools_are_listed_with_schemas(srv):
    tools = {t["name"]: t for t in srv.get("/tools").json()["data"]["tools"]}
    assert {"text2sql:list_databases", "text2sql:get_schema", "text2sql:execute"} <= set(tools)
    assert tools["text2sql:execute"]["parameters"]["required"] == ["db_id", "query"]


def test_default_server_serves_retail(server):
    out = run(server, "text2sql:execute", {"db_id": "retail", "query": "SELECT COUNT(*) FROM customers"})
    assert out["code"] == 0 and out["data"]["rows"] == [[700]]


def test_text2sql_happy_path(srv):
    listed = run(srv, "text2sql:list_databases", {})
    assert listed["code"] == 0 and listed["data"]["databases"][0]["db_id"] == "retail"
    schema = run(srv, "text2sql-get_schema", {"db_id": "retail", "tables": ["payments"]})
    assert schema["code"] == 0 and schema["data"]["tables"][0]["foreign_keys"][0]["references_table"] == "orders"
    out = run(srv, "text2sql_execute", {"db_id": "retail", "query": "SELECT name FROM stores ORDER BY store_id",
                                        "max_rows": 2})
    assert out["code"] == 0
    assert out["data"]["rows"] == [["Northwind Trails Portland"], ["Northwind Trails Seattle"]]
    assert out["data"]["truncated"] is True


@pytest.mark.parametrize("params, code, text", [
    ({"db_id": "retail", "tables": ["nope"]}, 1002, "no such table"),
    ({"db_id": "nope"}, 1002, "known databases: retail"),
    ({}, 1002, "db_id"),
])
def test_get_schema_bad_inputs(srv, params, code, text):
    out = run(srv, "text2sql:get_schema", params)
    assert out["code"] == code and text in out["message"], out


@pytest.mark.parametrize("query, code, text", [
    ("SELECT * FROM missing_table", 2001, "no such table: missing_table"),
    ("DELETE FROM customers", 2001, "read-only"),
    ("PRAGMA query_only = OFF", 2001, "read-only"),
    ("SELECT FROM WHERE", 2001, "syntax error"),
    ("", 1002, "query"),
    ("   ", 1002, "empty"),
])
def test_execute_bad_inputs(srv, query, code, text):
    out = run(srv, "text2sql:execute", {"db_id": "retail", "query": query})
    assert out["code"] == code and text in out["message"], out


def test_execute_long_query_is_2002(srv):
    query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    out = run(srv, "text2sql:execute", {"db_id": "retail", "query": query})
    assert out["code"] == 2002 and "time limit" in out["message"], out
    short = run(srv, "text2sql:execute", {"db_id": "retail", "query": query}, timeout=0.3)
    assert short["code"] == 2002, short
