"""text2sql and doc through the real server (POST /execute), including bad inputs."""
from __future__ import annotations

import uuid

import pytest

REPO_XML = "seeds/doc/xml/northwind_trails_report_2024"


def run(server, action, params, **extra):
    body = {"worker_id": f"t2s-doc-{uuid.uuid4().hex[:8]}", "action": action, "params": params, **extra}
    r = server.post("/execute", body)
    return r.json()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server with only text2sql and doc, as configured by the shipped configs' options."""
    from tests.support.server import start_server

    config = {"resources": {
        "text2sql": {"config": {"statement_timeout": 1}},
        "doc": {"config": {"seed_path": REPO_XML}},
    }}
    server = start_server(tmp_path_factory.mktemp("t2s_doc"), config=config, workers=1, threads=4)
    yield server
    server.stop()


def test_tools_are_listed_with_schemas(srv):
    tools = {t["name"]: t for t in srv.get("/tools").json()["data"]["tools"]}
    assert {"text2sql:list_databases", "text2sql:get_schema", "text2sql:execute",
            "doc:outline", "doc:search", "doc:read"} <= set(tools)
    assert tools["text2sql:execute"]["parameters"]["required"] == ["db_id", "query"]
    openai = srv.get("/tools", params={"format": "openai"}).json()["data"]["tools"]
    assert any(t["function"]["name"] == "doc-read" for t in openai)


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


def test_doc_happy_path(srv):
    outline = run(srv, "doc:outline", {})  # the configured default document
    assert outline["code"] == 0 and outline["data"]["title"] == "Northwind Trails Annual Report 2024"
    hits = run(srv, "doc:search", {"key_words": ["Reno"], "seed_path": REPO_XML})
    assert hits["code"] == 0 and hits["data"]["results"][0]["section_id"] == "9"
    read = run(srv, "doc-read", {"seed_path": "seeds/doc/markdown/python_execution_model.md", "section_ids": ["8"],
                                 "goal": "termination model"})
    assert read["code"] == 0 and "termination" in read["data"]["sections"][0]["text"]
    assert "goal ignored" in read["data"]["note"]
    pdf = run(srv, "doc:outline", {"seed_path": "seeds/doc/pdf/python_format_strings.pdf"})
    assert pdf["code"] == 0 and pdf["data"]["pages"] == 12


@pytest.mark.parametrize("action, params, text", [
    ("doc:outline", {"seed_path": "../../etc/passwd"}, "outside the allowed"),
    ("doc:outline", {"seed_path": "/etc/passwd"}, "outside the allowed"),
    ("doc:read", {"seed_path": REPO_XML, "section_ids": ["42"]}, "no section '42'"),
    ("doc:read", {"section_ids": []}, "section_ids"),
    ("doc:search", {"key_words": ""}, "key_words"),
    ("doc:search", {"key_words": "x", "seed_path": "seeds/doc/missing.md"}, "does not exist"),
    ("doc:search", {"seed_path": REPO_XML}, "key_words"),
])
def test_doc_bad_inputs(srv, action, params, text):
    out = run(srv, action, params)
    assert out["code"] == 1002 and text in out["message"], out


def test_default_server_serves_both(server):
    assert run(server, "text2sql:execute", {"db_id": "retail", "query": "SELECT COUNT(*) FROM customers"})["data"][
        "rows"] == [[700]]
    assert run(server, "doc:outline", {"seed_path": "seeds/doc/html/python_compound_statements.html"})["code"] == 0
