"""MCP servers as tools, through ``/execute`` of a real server under gunicorn: the Python
``mcp-server-time`` (PyPI) and the Node ``server-everything`` (npm), run confined per
session, plus a shared one."""
from __future__ import annotations

import base64
import json
import sqlite3
import uuid

from tests.mcp.conftest import SECRET


def _ex(srv, worker, action, params=None, **kw):
    return srv.post("/execute", {"worker_id": worker, "action": action, "params": params or {}, **kw}).json()


def _w():
    return f"mcp-t-{uuid.uuid4().hex[:8]}"


def test_tools_are_listed_with_the_servers_schemas_descriptions_and_annotations(mcp_server):
    tools = {t["name"]: t for t in mcp_server.get("/tools").json()["data"]["tools"]}
    t = tools["mcp:time.get_current_time"]
    assert t["parameters"]["required"] == ["timezone"] and "timezone" in t["description"].lower()
    assert t["annotations"]["readOnlyHint"] is True and t["needs_session"] is True
    assert t["aliases"][0] == "mcp-time_get_current_time"
    assert tools["mcp:stime.get_current_time"]["needs_session"] is False
    assert "one clock for every session" in tools["mcp:stime.get_current_time"]["description"]
    assert "mcp:everything.get-tiny-image" in tools
    openai = {t["function"]["name"] for t in mcp_server.get("/tools", params={"format": "openai"}).json()["data"]["tools"]}
    assert {"mcp-time_get_current_time", "mcp-everything_get-tiny-image", "bash-run"} <= openai
    assert all(n.replace("-", "").replace("_", "").isalnum() and len(n) <= 64 for n in openai)
    assert SECRET not in mcp_server.get("/tools").text


def test_calls_run_in_the_session_and_every_alias_resolves(mcp_server):
    w = _w()
    assert mcp_server.post("/session/create", {"worker_id": w, "resource_type": "mcp"}).json()["code"] == 0
    for name in ("mcp:time.get_current_time", "mcp-time_get_current_time", "mcp_time.get_current_time"):
        out = _ex(mcp_server, w, name, {"timezone": "Europe/Paris"})
        assert out["code"] == 0, out
        assert json.loads(out["data"]["text"])["timezone"] == "Europe/Paris"
        assert out["meta"]["tool"] == "mcp:time.get_current_time" and not out["meta"]["temporary_session"]
    shared = _ex(mcp_server, w, "mcp:stime.get_current_time", {"timezone": "Asia/Tokyo"})
    assert shared["code"] == 0 and shared["meta"]["session_id"] is None, shared


def test_images_structured_content_resources_and_progress(mcp_server):
    w = _w()
    mcp_server.post("/session/create", {"worker_id": w, "resource_type": "mcp"})
    image = _ex(mcp_server, w, "mcp:everything.get-tiny-image")
    assert image["code"] == 0, image
    png = base64.b64decode(image["data"]["images"][0]["data"])
    assert png.startswith(b"\x89PNG") and image["data"]["images"][0]["mime_type"] == "image/png"
    assert {"type": "image", "mime_type": "image/png", "index": 0} in image["data"]["content"]
    structured = _ex(mcp_server, w, "mcp:everything.get-structured-content", {"location": "Chicago"})
    assert structured["code"] == 0 and "temperature" in structured["data"]["structured_content"], structured
    ref = _ex(mcp_server, w, "mcp:everything.get-resource-reference", {"resourceType": "Text", "resourceId": 1})
    assert ref["code"] == 0 and ref["data"]["resources"][0]["uri"], ref
    slow = _ex(mcp_server, w, "mcp:everything.trigger-long-running-operation", {"duration": 1, "steps": 3})
    assert slow["code"] == 0 and [p["progress"] for p in slow["data"]["progress"]] == [1, 2, 3], slow


def test_is_error_is_a_2001_with_the_servers_text(mcp_server):
    out = _ex(mcp_server, _w(), "mcp:time.get_current_time", {"timezone": "Nowhere/Bad"})
    assert out["code"] == 2001 and "Nowhere/Bad" in out["message"] and out["data"]["is_error"] is True, out
    assert out["meta"]["temporary_session"] is True  # no session: a temporary one, ended after the call


def test_a_timeout_cancels_and_kills_a_server_that_ignores_the_cancel(mcp_server):
    w = _w()
    mcp_server.post("/session/create", {"worker_id": w, "resource_type": "mcp"})
    out = _ex(mcp_server, w, "mcp:everything.trigger-long-running-operation", {"duration": 30, "steps": 30},
              timeout=2)
    assert out["code"] == 2002 and out["data"]["cancelled"] and out["data"]["server_killed"], out
    again = _ex(mcp_server, w, "mcp:everything.echo", {"message": "back"})
    assert again["code"] == 0 and again["data"]["text"] == "Echo: back" and again["data"]["server_restarted"], again


def test_secrets_in_env_are_masked_in_results(mcp_server):
    out = _ex(mcp_server, _w(), "mcp:everything.get-env")
    assert out["code"] == 0 and "API_TOKEN" in out["data"]["text"], out
    assert SECRET not in json.dumps(out) and "***" in out["data"]["text"]


def test_every_call_is_audited_and_the_session_end_stops_its_servers(mcp_server):
    w = _w()
    mcp_server.post("/session/create", {"worker_id": w, "resource_type": "mcp"})
    out = _ex(mcp_server, w, "mcp:everything.echo", {"message": "audited"}, trace_id="trace-mcp-1")
    assert out["code"] == 0
    db = sqlite3.connect(mcp_server.home / "agentflow.db")
    rows = db.execute("SELECT action, code, params FROM tool_calls WHERE trace_id = 'trace-mcp-1'").fetchall()
    assert rows == [("mcp:everything.echo", 0, json.dumps({"message": "audited"}))] or \
        (rows and rows[0][0] == "mcp:everything.echo" and json.loads(rows[0][2]) == {"message": "audited"})
    pids = _node_pids(str(mcp_server.workspace_of(out["meta"]["session_id"])))
    assert pids, "the everything server runs while the session lives"
    assert mcp_server.post("/session/destroy", {"worker_id": w, "resource_type": "mcp"}).json()["code"] == 0
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _node_pids(str(mcp_server.workspace_of(out["meta"]["session_id"]))):
        time.sleep(0.2)
    assert not set(pids) & {int(e) for e in __import__("os").listdir("/proc") if e.isdigit()}


def _node_pids(home: str) -> list[int]:
    """The session's server-everything processes (their HOME is the session workspace)."""
    import os
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            try:
                env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(b"server-everything" in part for part in cmd) and f"HOME={home}".encode() in env:
                found.append(int(entry))
    return found


def test_mcp_server_git_reads_a_repository_it_is_given_read_only(mcp_server):
    w = _w()
    mcp_server.post("/session/create", {"worker_id": w, "resource_type": "mcp"})
    log = _ex(mcp_server, w, "mcp:git.git_log", {"repo_path": mcp_server.repo, "max_count": 5})
    assert log["code"] == 0 and "the first commit of the test repository" in log["data"]["text"], log
    status = _ex(mcp_server, w, "mcp:git.git_status", {"repo_path": mcp_server.repo})
    assert status["code"] == 0 and "nothing to commit" in status["data"]["text"], status
