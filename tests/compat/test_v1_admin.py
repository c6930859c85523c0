"""The rest of the reference protocol: the tool list and schemas (in the parameter-list
format its ``convert_tool_schema_to_openai`` reads), warmup and its status, ``GET /ready``,
``server/shutdown``; and what our middleware adds to ``/api/v1`` as to our own paths:
the token, the Host check, ``X-Request-ID`` replays."""
from __future__ import annotations

import time
import uuid

import requests
from sqlalchemy import create_engine, text

from tests.compat.conftest import RefClient


def to_openai(schema: dict) -> dict:
    """What the reference's ``convert_tool_schema_to_openai`` reads of a schema: ``name``,
    ``description`` and ``parameters`` as [{name, type, description, required,
    array_type?, enum?}] (our own rendering of that format, to check the fields)."""
    props, required = {}, []
    for p in schema["parameters"]:
        prop = {"type": p["type"], "description": p.get("description", "")}
        if p["type"] == "array":
            prop["items"] = {"type": p.get("array_type", "string")}
        props[p["name"]] = prop
        if p.get("required"):
            required.append(p["name"])
    return {"name": schema["name"], "parameters": {"type": "object", "properties": props, "required": required}}


def test_tool_list_is_a_plain_tools_list(ref):
    r = ref.get("/api/v1/tools?include_hidden=False")
    body = r.json()
    assert r.status_code == 200 and set(body) == {"tools", "count"} and body["count"] == len(body["tools"])
    by_name = {t["full_name"]: t for t in body["tools"]}
    bash = by_name["bash:run"]
    assert {k: bash[k] for k in ("name", "full_name", "resource_type", "stateless")} == {
        "name": "run", "full_name": "bash:run", "resource_type": "bash", "stateless": False}
    assert by_name["rag:search"]["stateless"] is True and bash["description"]
    assert "diag:noop" not in by_name
    hidden = {t["full_name"] for t in ref.get("/api/v1/tools?include_hidden=True").json()["tools"]}
    assert "diag:noop" in hidden


def test_tool_schema_in_the_parameter_list_format(ref):
    schema = ref.get("/api/v1/tools/text2sql:get_schema/schema").json()
    assert {k: schema[k] for k in ("name", "full_name", "resource_type", "stateless")} == {
        "name": "get_schema", "full_name": "text2sql:get_schema", "resource_type": "text2sql", "stateless": True}
    params = {p["name"]: p for p in schema["parameters"]}
    assert params["db_id"] == {"name": "db_id", "type": "string", "required": True,
                               "description": params["db_id"]["description"]}
    assert params["table_names"]["type"] == "array" and params["table_names"]["array_type"] == "string"
    assert to_openai(schema)["parameters"]["required"] == ["db_id"]
    web = ref.get("/api/v1/tools/web-search/schema").json()  # a query given as a string or a list: a list
    assert {p["name"]: (p["type"], p.get("array_type")) for p in web["parameters"]}["query"] == ("array", "string")
    assert ref.get("/api/v1/tools/list_databases/schema").json()["full_name"] == "text2sql:list_databases"
    missing = ref.get("/api/v1/tools/nope/schema")
    assert missing.status_code == 404 and missing.json() == {"status": "error", "message": "Tool not found: nope"}


def test_warmup_and_status_are_top_level(ref):
    r = ref.post("/api/v1/warmup", {"backends": ["rag", "sql"]})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success" and body["results"] == {"rag": True, "sql": True}
    assert set(body["summary"]) == {"total", "warmed_up", "pending"}
    bad = ref.post("/api/v1/warmup", {"backends": ["rag", "nope"]}).json()
    assert bad["status"] == "partial_error" and bad["results"] == {"rag": True, "nope": False}
    assert "Backend not found: nope" in bad["errors"]["nope"]
    status = ref.get("/api/v1/warmup/status").json()
    assert status["backends"]["rag"] == {"loaded": True, "warmed_up": True, "retrieval": "bm25"}
    assert status["summary"]["total"] == len(status["backends"])


def test_ready(ref):
    ref.create_session("rag")
    body = ref.get("/ready").json()
    assert body["status"] == "ready" and body["tools_count"] >= 10
    assert body["active_workers"] >= 1 and body["total_sessions"] >= 1
    ref.worker_call("/api/v1/worker/disconnect")


def test_dense_rag_options_are_accepted_and_bm25_is_said(server_factory):
    srv = server_factory({"resources": {"rag": {"enabled": True, "config": {
        "model_name": "/models/e5-base", "index_path": "/indexes/e5.index", "device": "cuda:2",
        "default_top_k": 3, "batcher_trigger_batch_size": 16, "batcher_max_batch_size": 32,
        "batcher_max_wait_time": 0.05}}}, "warmup": {"enabled": True, "resources": ["rag"]}})
    ref = RefClient(srv)
    warm = ref.post("/api/v1/warmup", {"backends": ["rag"]}).json()
    assert warm["status"] == "success"
    rag = ref.get("/api/v1/warmup/status").json()["backends"]["rag"]
    assert rag["retrieval"] == "bm25" and "model_name" in rag["dense_options_ignored"]
    assert "BM25" in rag["note"] and "no embedding model ships" in rag["note"]
    ours = srv.get("/warmup/status").json()["data"]["backends"]["rag"]
    assert ours["retrieval"] == "bm25" and ours["note"] == rag["note"]
    hits = ref.execute("rag:search", {"query": "lru_cache"}).json()["data"]
    assert len(hits["hits"]) == 3 and hits["context"]


def test_token_is_needed_on_api_v1_too(server_factory):
    srv = server_factory({"resources": {"diag": {}}}, token="s3cret")
    anonymous = requests.post(srv.url + "/api/v1/execute", json={"worker_id": "w", "action": "diag:noop"}, timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 1004
    assert requests.get(srv.url + "/api/v1/tools", timeout=30).status_code == 401
    assert requests.get(srv.url + "/ready", timeout=30).status_code == 401
    assert requests.get(srv.url + "/health", timeout=30).status_code == 200  # what its client's connect() checks
    ref = RefClient(srv)  # sends the server's token
    assert ref.execute("diag:noop").json()["code"] == 0
    shut = requests.post(srv.url + "/api/v1/server/shutdown", json={}, timeout=30)
    assert shut.status_code == 401 and srv.proc.poll() is None


def test_host_and_content_type_checks_apply(ref):
    rebound = ref.post("/api/v1/execute", {"worker_id": ref.worker_id, "action": "diag:noop"},
                       headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 421 and "Host" in rebound.json()["message"]
    form = requests.post(ref.server.url + "/api/v1/execute", data="worker_id=x", timeout=30,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415


def test_a_retry_with_x_request_id_is_answered_not_rerun(ref, server):
    marker = f"/tmp/af-v1-{uuid.uuid4().hex}"
    rid = f"v1-{uuid.uuid4().hex}"
    headers = {"X-Request-ID": rid}
    body = {"worker_id": ref.worker_id, "action": "bash:run", "params": {"command": f"echo x >> {marker}; "
                                                                          f"wc -l < {marker}"}, "timeout": None}
    first = ref.post("/api/v1/execute", body, headers=headers)
    again = ref.post("/api/v1/execute", body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["meta"]["replayed"] is True and again.json()["data"] == first.json()["data"]
    assert first.json()["data"]["stdout"].strip() == "1"
    # a failed call is stored too: the replay is the same 500, and the code did not run twice
    fail_rid = f"v1-{uuid.uuid4().hex}"
    failing = {"worker_id": ref.worker_id, "action": "code:run", "params": {"code": "raise ValueError('once')"}}
    one = ref.post("/api/v1/execute", failing, headers={"X-Request-ID": fail_rid})
    two = ref.post("/api/v1/execute", failing, headers={"X-Request-ID": fail_rid})
    assert one.status_code == two.status_code == 500 and two.json()["meta"]["replayed"] is True
    assert two.json()["code"] == 5000 and two.json()["message"] == "ValueError: once"
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(text("select count(*) from tool_calls where request_id in (:a, :b)"),
                                {"a": rid, "b": fail_rid}).scalar_one()
    finally:
        engine.dispose()
    assert runs == 2  # one audited run each


def test_server_shutdown(server_factory):
    srv = server_factory({"resources": {"bash": {}}})
    ref = RefClient(srv)
    assert ref.create_session("bash").json()["code"] == 0
    r = ref.post("/api/v1/server/shutdown", {"force": False, "cleanup_sessions": True})
    assert r.status_code == 200
    assert r.json() == {"status": "success", "message": "Server shutdown initiated", "sessions_cleaned": 1}
    deadline = time.monotonic() + 20
    while srv.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.proc.poll() is not None
