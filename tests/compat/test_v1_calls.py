"""``POST /api/v1/execute`` and ``/execute/batch``: each tool's answer where the
reference's result formatter and rollout message builder read it, its codes and HTTP
statuses, its tool names (``rag-search``, ``ds_run_python``, ``sql:execute``, bare
``list_databases``), and the audit row every call still gets."""
from __future__ import annotations

from sqlalchemy import create_engine, text

from tests.compat.conftest import RefClient

DOC = "seeds/doc/markdown/python_execution_model.md"


def _ok(response) -> dict:
    body = response.json()
    assert response.status_code == 200 and body["code"] == 0, body
    assert {"tool", "execution_time_ms", "resource_type", "session_id", "trace_id"} <= set(body["meta"])
    return body


def test_rag_search_gives_the_context_text(ref):
    body = _ok(ref.execute("rag-search", {"query": "lru_cache maxsize", "top_k": 2}))
    assert body["meta"]["tool"] == "rag:search"  # the formatter picks its RAG formatter by this name
    context = body["data"]["context"]
    assert isinstance(context, str) and "functools.lru_cache" in context and "maxsize=128" in context
    assert len(body["data"]["hits"]) == 2  # ours are kept beside it


def test_web_search_and_visit_give_a_result_text(ref):
    search = _ok(ref.execute("web-search", {"query": ["python json module"]}))
    assert search["meta"]["tool"] == "web:search"
    assert "https://docs.python.org/3/library/json.html" in search["data"]["result"]
    visit = _ok(ref.execute("web-visit", {"urls": ["https://docs.python.org/3/library/json.html"],
                                          "goal": "what json.dumps does"}))
    assert visit["meta"]["tool"] == "web:visit"
    result = visit["data"]["result"]
    assert result.startswith("## ") and "json.dumps" in result


def test_bash_gives_return_code(ref):
    body = _ok(ref.execute("bash:run", {"command": "echo out; echo err >&2; exit 3"}))
    data = body["data"]
    assert data["return_code"] == 3 == data["exit_code"]  # a failing command is not "success with no output"
    assert data["stdout"] == "out\n" and data["stderr"] == "err\n"


def test_code_result_is_the_printed_output_without_a_value(ref):
    printed = _ok(ref.execute("code:run", {"code": "print('printed', 6 * 7)"}))["data"]
    assert printed["result"] == "printed 42\n" and printed["value"] is None and printed["stdout"] == "printed 42\n"
    valued = _ok(ref.execute("code:run", {"code": "print('side'); 6 * 7"}))["data"]
    assert valued["result"] == "42" == valued["value"]


def test_a_tool_failure_is_a_5000_with_http_500(ref):
    r = ref.execute("code:run", {"code": "1/0"})
    body = r.json()
    assert r.status_code == 500 and body["code"] == 5000 and body["meta"]["agentflow_code"] == 2001
    assert body["message"] == "ZeroDivisionError: division by zero"  # what the reference client raises with
    assert "ZeroDivisionError" in body["data"]["result"]


def test_ds_run_python_result_and_return_vars(ref):
    body = _ok(ref.execute("ds_run_python", {"seed_path": "seeds/ds/bookshop", "return_vars": ["df", "nope"],
                                             "code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\n"
                                                     "print('rows', len(df))"}))
    data = body["data"]
    assert body["meta"]["tool"] == "ds:run_python"
    assert data["result"].startswith("rows 2400\n\ndf (DataFrame, shape=(2400, 7)):")
    assert data["variables"]["df"].startswith("df (DataFrame") and data["missing_variables"] == ["nope"]
    assert data["result"].rstrip().endswith("not defined: nope")


def test_text2sql_as_the_reference_reads_it(ref):
    listed = _ok(ref.execute("text2sql-list_databases"))["data"]
    assert listed["databases"] == ["retail"]  # names, joined by the formatter
    assert listed["database_details"][0]["db_id"] == "retail" and "stores" in listed["database_details"][0]["tables"]
    schema = _ok(ref.execute("text2sql-get_schema", {"db_id": "retail", "table_names": ["stores"]}))["data"]
    assert schema["db_id"] == "retail" and list(schema["schema"]) == ["stores"]
    columns = schema["schema"]["stores"]["columns"]
    assert {"name": "store_id", "type": "INTEGER", "pk": True} in columns
    assert [t["name"] for t in schema["tables"]] == ["stores"]
    fks = _ok(ref.execute("text2sql-get_schema", {"db_id": "retail", "table_names": ["orders"]}))["data"]
    assert {"from_col": "store_id", "to_table": "stores", "to_col": "store_id"} in fks["schema"]["orders"]["foreign_keys"]
    rows = _ok(ref.execute("text2sql-execute", {"db_id": "retail", "query": "SELECT COUNT(*) AS n FROM orders"}))
    assert {k: rows["data"][k] for k in ("columns", "rows", "row_count", "truncated")} == {
        "columns": ["n"], "rows": [[3200]], "row_count": 1, "truncated": False}


def test_sql_names_and_bare_names_resolve(ref):
    for action in ("sql:list_databases", "sql-list_databases", "list_databases"):
        body = _ok(ref.execute(action))
        assert body["meta"]["tool"] == "text2sql:list_databases" and body["data"]["databases"] == ["retail"]
    assert _ok(ref.execute("sql:execute", {"db_id": "retail", "query": "SELECT 1 AS one"}))["data"]["rows"] == [[1]]
    ambiguous = ref.execute("search", {"query": "x"})  # rag, web and doc all have one
    assert ambiguous.status_code == 400 and ambiguous.json()["code"] == 4002


def test_doc_tools_with_the_reference_parameters(ref):
    found = _ok(ref.execute("doc-search", {"seed_path": DOC, "key_words": ["binding"], "max_search_results": 1}))
    assert found["meta"]["tool"] == "doc:search" and len(found["data"]["results"]) == 1
    read = _ok(ref.execute("doc-read", {"seed_path": DOC, "section_ids": ["4"], "goal": "how names are bound",
                                        "max_image_num": 0, "max_text_token": 50}))["data"]
    (section,) = read["sections"]
    assert section["section_id"] == "4" and section["text"].startswith("*Names* refer to objects")
    assert len(section["text"]) < 50 * 4 + 60 and read["truncated"] is True  # 50 tokens of ~4 characters
    assert "no model is configured" in read["note"]


def test_unknown_tool_and_bad_parameters_are_4xxx_with_400(ref):
    missing = ref.execute("nope:nothing")
    assert missing.status_code == 400 and missing.json()["code"] == 4002
    assert missing.json()["meta"]["agentflow_code"] == 1001
    bad = ref.execute("bash:run", {"cmd": "ls"})
    assert bad.status_code == 400 and bad.json()["code"] == 4000 and "'command' is required" in bad.json()["message"]
    malformed = ref.post("/api/v1/execute", {"action": "bash:run"})  # no worker_id
    assert malformed.status_code == 400 and malformed.json()["code"] == 4002
    assert "worker_id" in malformed.json()["message"]


def test_extra_fields_are_ignored_as_the_reference_does(ref):
    body = _ok(ref.post("/api/v1/execute", {"worker_id": ref.worker_id, "action": "diag:noop", "params": {},
                                            "timeout": None, "async_mode": False, "message_id": "m1"}))
    assert body["meta"]["tool"] == "diag:noop"


def test_every_call_is_audited(ref, server):
    body = _ok(ref.execute("bash:run", {"command": "echo audited"}))
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select action, code, worker_id from tool_calls where request_id = :r"),
                                {"r": body["meta"]["request_id"]}).all()
    finally:
        engine.dispose()
    assert rows == [("bash:run", 0, ref.worker_id)]


def test_batch_shapes_and_statuses(server):
    ref = RefClient(server)
    ok = ref.execute_batch([{"action": "bash:run", "params": {"command": "echo a"}},
                            {"action": "rag:search", "params": {"query": "yield"}}])
    body = ok.json()
    assert ok.status_code == 200 and body["code"] == 0 and body["meta"]["tool"] == "batch:execute"
    assert {k: body["data"][k] for k in ("total", "executed", "success_count")} == {
        "total": 2, "executed": 2, "success_count": 2}
    assert body["data"]["results"][1]["data"]["context"]
    partial = ref.execute_batch([{"action": "bash:run", "params": {"command": "echo a"}},
                                 {"action": "code:run", "params": {"code": "1/0"}},
                                 {"action": "bash:run", "params": {"command": "echo c"}}])
    assert partial.status_code == 207 and partial.json()["code"] == 5010
    assert partial.json()["data"]["executed"] == 2  # stop_on_error
    failed = ref.execute_batch([{"action": "code:run", "params": {"code": "1/0"}}])
    assert failed.status_code == 500 and failed.json()["code"] == 5009
