"""Sessions through the reference protocol: ``session/*``, ``lifecycle/heartbeat`` and
``lifecycle/status``, ``worker/disconnect`` (every session of the worker ends), and
``init/resource``, ``init/batch``, ``init/from-config``."""
from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from tests.compat.conftest import RefClient


def _statuses(server, worker_id: str) -> dict:
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select resource_type, status from sessions where worker_id = :w"),
                                {"w": worker_id}).all()
    finally:
        engine.dispose()
    return dict(rows)


def test_create_list_refresh_destroy(ref):
    created = ref.create_session("bash", {})
    body = created.json()
    assert created.status_code == 200 and body["code"] == 0 and body["meta"]["tool"] == "session:create"
    data = body["data"]
    assert data["session_status"] == "active" and data["resource_type"] == "bash" and data["error"] is None
    assert data["session_name"] and body["session_id"] == data["session_id"]  # also where its Sandbox reads it
    again = ref.create_session("bash", {}).json()["data"]
    assert again["status"] == "exists" and again["session_id"] == data["session_id"]
    assert again["session_status"] == "active"

    (listed,) = ref.list_sessions()
    assert {k: listed[k] for k in ("resource_type", "session_id", "status", "auto_created")} == {
        "resource_type": "bash", "session_id": data["session_id"], "status": "active", "auto_created": False}
    assert {"session_name", "created_at", "last_activity", "expires_at"} <= set(listed)

    one = ref.refresh_session("bash").json()
    assert one["data"]["session_id"] == data["session_id"] and one["data"]["expires_at"]
    assert one["expires_at"] == one["data"]["expires_at"]  # the client's docs read result['expires_at']
    every = ref.refresh_session().json()
    assert every["data"]["refreshed_count"] == 1 == every["refreshed_count"]
    assert every["details"]["bash"]["status"] == "refreshed" and every["details"] == every["data"]["details"]

    destroyed = ref.destroy_session("bash")
    assert destroyed.status_code == 200 and destroyed.json()["data"]["session_id"] == data["session_id"]
    assert ref.list_sessions() == []
    gone = ref.destroy_session("bash")
    assert gone.status_code == 404 and gone.json()["code"] == 4007
    assert gone.json()["message"] == "No session found for bash"
    assert ref.refresh_session("bash").status_code == 404


def test_sql_is_text2sql_and_config_is_session_config(ref):
    body = ref.create_session("sql", {"note": "from resource_init_configs"}).json()
    assert body["code"] == 0 and body["data"]["resource_type"] == "sql"
    assert body["data"]["session_id"].startswith("text2sql_")
    assert [s["resource_type"] for s in ref.list_sessions()] == ["text2sql"]
    assert ref.destroy_session("sql").status_code == 200


def test_a_session_that_fails_to_start_is_a_500(server_factory):
    srv = server_factory({"resources": {"code": {"config": {"python": "/bin/false", "startup_timeout": 3}}}})
    r = RefClient(srv).create_session("code")
    body = r.json()
    assert r.status_code == 500 and body["code"] == 4007 and body["message"] == "Session creation failed"
    assert body["data"]["session_status"] == "error" and body["data"]["error"]


def test_heartbeat_and_status(ref):
    assert ref.create_session("rag").json()["code"] == 0
    beat = ref.worker_call("/api/v1/lifecycle/heartbeat").json()
    assert beat["code"] == 0 and beat["meta"]["tool"] == "session:heartbeat"
    assert beat["data"]["worker_id"] == ref.worker_id and beat["data"]["active_sessions"] == ["rag"]
    assert beat["data"]["timestamp"]
    status = ref.worker_call("/api/v1/lifecycle/status").json()["data"]
    assert status["active_resources"] == ["rag"] and status["sessions"]["rag"]["status"] == "active"
    assert status["tools_available"] >= 10
    missing = ref.post("/api/v1/lifecycle/heartbeat", {})
    assert missing.status_code == 400 and "worker_id" in missing.json()["message"]


def test_worker_disconnect_ends_every_session_of_the_worker(ref, server):
    for resource in ("bash", "code", "rag"):
        assert ref.create_session(resource).json()["code"] == 0
    other = RefClient(server)
    assert other.create_session("bash").json()["code"] == 0
    out = ref.worker_call("/api/v1/worker/disconnect").json()
    assert out["code"] == 0 and out["data"] == {"worker_id": ref.worker_id, "sessions_cleaned": 3}
    assert ref.list_sessions() == []
    assert _statuses(server, ref.worker_id) == {"bash": "destroyed", "code": "destroyed", "rag": "destroyed"}
    assert [s["resource_type"] for s in other.list_sessions()] == ["bash"]  # another worker's stay
    assert ref.worker_call("/api/v1/worker/disconnect").json()["data"]["sessions_cleaned"] == 0
    other.worker_call("/api/v1/worker/disconnect")


def test_init_resource_and_batch(ref):
    one = ref.post("/api/v1/init/resource", {"worker_id": ref.worker_id, "resource_type": "bash",
                                             "init_config": {}}).json()
    assert one["code"] == 0 and one["data"]["session_status"] == "active" and one["meta"]["tool"] == "init:resource"
    ok = ref.post("/api/v1/init/batch", {"worker_id": ref.worker_id, "resource_configs": {
        "rag": {"content": {"top_k": 3}}, "sql": {}}})
    assert ok.status_code == 200 and ok.json()["data"]["success_count"] == 2
    assert ok.json()["data"]["results"]["rag"]["status"] == "success"
    partial = ref.post("/api/v1/init/batch", {"worker_id": ref.worker_id, "resource_configs": {
        "bash": {}, "nope": {}}})
    assert partial.status_code == 207 and partial.json()["code"] == 5010
    assert partial.json()["data"]["results"]["nope"]["status"] == "error"
    failed = ref.post("/api/v1/init/batch", {"worker_id": ref.worker_id, "resource_configs": {"nope": {}}})
    assert failed.status_code == 500 and failed.json()["code"] == 5009
    assert sorted(s["resource_type"] for s in ref.list_sessions()) == ["bash", "rag", "text2sql"]
    ref.worker_call("/api/v1/worker/disconnect")


def test_init_from_config_reads_configs_inside_the_roots_only(ref, tmp_path):
    body = {"worker_id": ref.worker_id, "config_path": "configs/sandbox-server/rag.json",
            "override_params": {"warmup": {"enabled": False}, "not_in_file": 1}}
    out = ref.post("/api/v1/init/from-config", body).json()
    assert out["code"] == 0 and out["data"]["config_loaded"] == "configs/sandbox-server/rag.json"
    config = out["data"]["config"]
    assert config["warmup"]["enabled"] is False and "not_in_file" not in config  # as the reference merges
    assert config["resources"]["rag"]["config"]["default_top_k"] == 5
    missing = ref.post("/api/v1/init/from-config", {**body, "config_path": "configs/none.json"})
    assert missing.status_code == 404 and missing.json()["message"] == "Config file not found: configs/none.json"
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"k": 1}))
    refused = ref.post("/api/v1/init/from-config", {**body, "config_path": str(outside)})
    assert refused.status_code == 400 and "outside the allowed directories" in refused.json()["message"]


def test_init_from_config_masks_secrets(server_factory, tmp_path):
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "web.json").write_text(json.dumps({"apis": {"websearch": {"serper_api_key": "sk-123", "k": 2}}}))
    srv = server_factory({"server": {"roots": [str(roots)]}, "resources": {"diag": {}}})
    ref = RefClient(srv)
    out = ref.post("/api/v1/init/from-config", {"worker_id": ref.worker_id, "config_path": str(roots / "web.json")})
    assert out.json()["data"]["config"] == {"apis": {"websearch": {"serper_api_key": "***", "k": 2}}}
