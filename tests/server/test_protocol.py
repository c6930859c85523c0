"""The HTTP protocol: envelopes, error codes, aliases, tools list, OpenAPI."""
from __future__ import annotations

import re
import uuid

import requests

JSON = {"Content-Type": "application/json"}  # raw bodies still declare JSON, as every client must


def wid() -> str:
    return f"w_{uuid.uuid4().hex[:8]}"


def test_health_is_plain_json(server):
    r = server.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["version"]


def test_execute_envelope_and_meta_are_filled(server):
    r = server.post("/execute", {"worker_id": wid(), "action": "diag:echo", "params": {"value": 42}})
    body = r.json()
    assert r.status_code == 200 and body["code"] == 0 and body["data"] == {"value": 42}
    meta = body["meta"]
    assert meta["tool"] == "diag:echo" and meta["resource_type"] == "diag"
    assert meta["trace_id"] and meta["request_id"] and meta["execution_time_ms"] >= 0
    assert meta["temporary_session"] is False


def test_tool_name_aliases_resolve_to_one_tool(server):
    w = wid()
    for name in ("bash:run", "bash-run", "bash_run", "bash.run", "BASH-RUN"):
        body = server.post("/execute", {"worker_id": w, "action": name, "params": {"command": "echo ok"}}).json()
        assert body["code"] == 0, (name, body)
        assert body["meta"]["tool"] == "bash:run"
        assert body["data"]["stdout"] == "ok\n"


def test_malformed_json_is_1000(server):
    r = requests.post(server.url + "/execute", data='{"worker_id": "w",', timeout=10, headers=JSON)
    assert r.status_code == 400 and r.json()["code"] == 1000
    assert "not valid JSON" in r.json()["message"]


def test_body_must_be_an_object(server):
    r = requests.post(server.url + "/execute", data="[1, 2]", timeout=10, headers=JSON)
    assert r.status_code == 400 and r.json()["code"] == 1000 and "JSON object" in r.json()["message"]


def test_deeply_nested_json_is_1000_not_500(server):
    r = requests.post(server.url + "/execute", data="[" * 100000 + "]" * 100000, timeout=10,
                      headers=JSON)
    assert r.status_code == 400 and r.json()["code"] == 1000


def test_missing_worker_id_names_the_field(server):
    r = server.post("/execute", {"action": "bash:run", "params": {"command": "true"}})
    assert r.status_code == 400 and r.json()["code"] == 1000
    assert "worker_id" in r.json()["message"]


def test_unknown_body_field_is_rejected(server):
    r = server.post("/execute", {"worker_id": "w", "action": "diag:noop", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["message"]


def test_unknown_tool_is_1001_with_suggestions(server):
    r = server.post("/execute", {"worker_id": wid(), "action": "bash:rnu", "params": {}})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 1001 and "bash:run" in body["message"]
    assert "bash:run" in body["data"]["suggestions"]


def test_wrong_parameter_type_is_1002_naming_it(server):
    r = server.post("/execute", {"worker_id": wid(), "action": "bash:run", "params": {"command": 5}})
    body = r.json()
    assert r.status_code == 400 and body["code"] == 1002 and "command" in body["message"] and body["data"]["param"] == "command"


def test_missing_and_unknown_parameters_are_1002(server):
    body = server.post("/execute", {"worker_id": wid(), "action": "bash:run", "params": {}}).json()
    assert body["code"] == 1002 and "'command' is required" in body["message"]
    body = server.post("/execute", {"worker_id": wid(), "action": "bash:run",
                                    "params": {"command": "true", "cmd": 1}}).json()
    assert body["code"] == 1002 and "cmd" in body["message"]


def test_bad_timeout_is_1002_and_a_large_one_is_capped(server):
    body = server.post("/execute", {"worker_id": wid(), "action": "diag:sleep",
                                    "params": {"seconds": 0}, "timeout": -1}).json()
    assert body["code"] == 1000 and "timeout" in body["message"]
    body = server.post("/execute", {"worker_id": wid(), "action": "bash:run",
                                    "params": {"command": "true", "timeout": "soon"}}).json()
    assert body["code"] == 1002 and "timeout" in body["message"]
    capped = server.post("/execute", {"worker_id": wid(), "action": "diag:sleep",
                                      "params": {"seconds": 0}, "timeout": 10**6}).json()
    assert capped["code"] == 0


def test_tool_failure_is_a_result_not_an_error(server):
    r = server.post("/execute", {"worker_id": wid(), "action": "diag:echo", "params": {"value": "x", "fail": True}})
    assert r.status_code == 200 and r.json()["code"] == 2001 and r.json()["data"] == {"value": "x"}


def test_timeout_keeps_partial_output(server):
    body = server.post("/execute", {"worker_id": wid(), "action": "bash:run",
                                    "params": {"command": "echo started; sleep 30", "timeout": 1}}).json()
    assert body["code"] == 2002
    assert body["data"]["stdout"] == "started\n" and body["data"]["signal"] == "SIGKILL"


def test_unknown_endpoint_is_an_envelope(server):
    r = server.post("/nope", {})
    assert r.status_code == 404 and r.json()["code"] == 1000 and "/nope" in r.json()["message"]


def test_api_v1_speaks_the_reference_protocol_not_ours(server):
    """Our envelope lives on the documented paths only; /api/v1 is the reference's
    protocol (tests/compat), e.g. its tool list is a plain object, not an envelope."""
    w = wid()
    assert server.post("/execute", {"worker_id": w, "action": "diag:noop"}).json()["code"] == 0
    listed = server.get("/api/v1/tools").json()
    assert "code" not in listed and listed["count"] == len(listed["tools"])
    assert server.get("/api/v1/health").status_code == 404  # the reference has /health at the root only
    assert server.post("/api/v1/shutdown", {}).status_code == 404  # its shutdown is /api/v1/server/shutdown


def test_tools_list_and_openai_format(server):
    tools = server.get("/tools").json()["data"]["tools"]
    names = {t["name"] for t in tools}
    assert "bash:run" in names and "diag:noop" not in names  # diagnostics are hidden
    bash = next(t for t in tools if t["name"] == "bash:run")
    assert bash["parameters"]["type"] == "object" and "command" in bash["parameters"]["properties"]
    hidden = {t["name"] for t in server.get("/tools?include_hidden=true").json()["data"]["tools"]}
    assert "diag:noop" in hidden
    openai_tools = server.get("/tools?format=openai").json()["data"]["tools"]
    for t in openai_tools:
        assert t["type"] == "function"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", t["function"]["name"])
    # every offered name is accepted by /execute
    offered = next(t["function"]["name"] for t in openai_tools if t["function"]["name"] == "bash-run")
    assert server.post("/execute", {"worker_id": wid(), "action": offered,
                                    "params": {"command": "true"}}).json()["code"] == 0


def test_tools_query_is_validated(server):
    r = server.get("/tools?format=xml")
    assert r.status_code == 400 and "format" in r.json()["message"]


def test_openapi_documents_every_endpoint(server):
    doc = server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/execute", "/execute/batch", "/session/create", "/session/destroy", "/session/list",
                 "/session/refresh", "/tools", "/health", "/warmup", "/warmup/status", "/shutdown"):
        assert path in doc["paths"]
    assert not [p for p in doc["paths"] if p.startswith("/api/v1")]  # another protocol: docs/reference-compat.md
    assert "worker_id" in doc["components"]["schemas"]["ExecuteBody"]["required"]


def test_batch_sequential_stops_on_error(server):
    w = wid()
    body = server.post("/execute/batch", {"worker_id": w, "actions": [
        {"action": "diag:echo", "params": {"value": 1}},
        {"action": "diag:echo", "params": {"value": 2, "fail": True}},
        {"action": "diag:echo", "params": {"value": 3}},
    ]}).json()
    assert body["code"] == 2001
    assert body["data"]["total"] == 3 and body["data"]["executed"] == 2 and body["data"]["succeeded"] == 1
    assert [r["code"] for r in body["data"]["results"]] == [0, 2001]


def test_batch_parallel_runs_everything(server):
    body = server.post("/execute/batch", {"worker_id": wid(), "parallel": True, "actions": [
        {"action": "diag:sleep", "params": {"seconds": 0.5}} for _ in range(8)]}).json()
    assert body["code"] == 0 and body["data"]["succeeded"] == 8
    assert body["meta"]["execution_time_ms"] < 8 * 500  # they overlapped


def test_warmup_and_status(server):
    body = server.post("/warmup", {"backends": ["bash"]}).json()
    assert body["code"] == 0 and body["data"]["results"]["bash"]["success"] is True
    status = server.get("/warmup/status").json()["data"]["backends"]
    assert status["bash"] == {"loaded": True, "warmed_up": True}
    bad = server.post("/warmup", {"backends": ["nope"]})
    assert bad.status_code == 400 and bad.json()["code"] == 1002 and "nope" in bad.json()["message"]


def test_failed_warmup_is_2003_and_other_tools_keep_working(server_factory):
    srv = server_factory({"resources": {"diag": {"config": {"fail_warmup": "index file is corrupt"}},
                                        "bash": {}}})
    headers = {"X-Request-ID": uuid.uuid4().hex}
    body = {"worker_id": "w", "action": "diag:noop"}
    r = srv.post("/execute", body, headers=headers)
    assert r.status_code == 503 and r.json()["code"] == 2003
    assert "index file is corrupt" in r.json()["message"] and "corrupt" in r.json()["data"]["error"]
    again = srv.post("/execute", body, headers=headers).json()
    assert again["code"] == 2003 and not again["meta"].get("replayed")  # retried for real, not replayed
    assert srv.post("/execute", {"worker_id": "w", "action": "bash:run",
                                 "params": {"command": "echo fine"}}).json()["data"]["stdout"] == "fine\n"
    status = srv.get("/warmup/status").json()["data"]["backends"]
    assert status["bash"]["loaded"] and status["diag"]["warmed_up"] is False
    warm = srv.post("/warmup", {"backends": ["diag"]})
    assert warm.status_code == 503 and "corrupt" in warm.json()["message"]
    assert "corrupt" in srv.get("/warmup/status").json()["data"]["backends"]["diag"]["error"]
