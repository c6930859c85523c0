"""Sessions: one per (worker, resource), temporary ones, TTL expiry, refresh, destroy."""
from __future__ import annotations

import time
import uuid

from sqlalchemy import create_engine, text


def wid() -> str:
    return f"w_{uuid.uuid4().hex[:8]}"


def run(server, worker, command, **kw):
    return server.post("/execute", {"worker_id": worker, "action": "bash:run",
                                    "params": {"command": command, **kw}}).json()


def test_create_is_idempotent_per_worker_and_resource(server):
    w = wid()
    first = server.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    again = server.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    assert first["code"] == 0 and first["data"]["created"] is True
    assert again["code"] == 0 and again["data"]["created"] is False
    assert again["data"]["session_id"] == first["data"]["session_id"]
    assert first["data"]["session_status"] == "active"


def test_cd_and_export_persist_within_a_session_only(server):
    w, other = wid(), wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    server.post("/session/create", {"worker_id": other, "resource_type": "bash"})
    assert run(server, w, "mkdir -p sub && cd sub && export SECRET_WORD=plum")["code"] == 0
    out = run(server, w, 'basename "$PWD"; echo "$SECRET_WORD"')
    assert out["data"]["stdout"] == "sub\nplum\n" and out["meta"]["temporary_session"] is False
    assert run(server, other, 'echo "[$SECRET_WORD]"')["data"]["stdout"] == "[]\n"


def test_calls_without_a_session_get_a_temporary_one(server):
    w = wid()
    first = run(server, w, "export X=1; touch marker")
    assert first["meta"]["temporary_session"] is True and first["meta"]["session_id"].startswith("tmp_")
    second = run(server, w, 'echo "[$X]"; ls')
    assert second["data"]["stdout"] == "[]\n"  # nothing survives a temporary session
    assert server.post("/session/list", {"worker_id": w}).json()["data"]["sessions"] == []


def test_list_refresh_destroy(server):
    w = wid()
    created = server.post("/session/create", {"worker_id": w, "resource_type": "bash", "custom_name": "mine"}).json()
    listed = server.post("/session/list", {"worker_id": w}).json()["data"]["sessions"]
    assert [s["session_name"] for s in listed] == ["mine"]
    assert set(listed[0]) >= {"resource_type", "session_id", "session_name", "status", "created_at",
                              "last_activity", "expires_at"}
    time.sleep(0.05)
    refreshed = server.post("/session/refresh", {"worker_id": w}).json()
    assert refreshed["code"] == 0 and refreshed["data"]["sessions"][0]["expires_at"] > created["data"]["expires_at"]
    workspace = server.workspace_of(created["data"]["session_id"])
    assert workspace.is_dir()
    destroyed = server.post("/session/destroy", {"worker_id": w, "resource_type": "bash"}).json()
    assert destroyed["code"] == 0 and destroyed["data"]["status"] == "destroyed"
    assert not workspace.exists()
    assert server.post("/session/list", {"worker_id": w}).json()["data"]["sessions"] == []


def test_destroy_missing_session_is_1003(server):
    r = server.post("/session/destroy", {"worker_id": wid(), "resource_type": "bash"})
    assert r.status_code == 409 and r.json()["code"] == 1003 and "no live session" in r.json()["message"]


def test_refresh_missing_session_is_1003(server):
    r = server.post("/session/refresh", {"worker_id": wid(), "resource_type": "bash"})
    assert r.status_code == 409 and r.json()["code"] == 1003


def test_unknown_resource_type_is_1002(server):
    r = server.post("/session/create", {"worker_id": wid(), "resource_type": "vmx"})
    assert r.status_code == 400 and r.json()["code"] == 1002
    assert "vmx" in r.json()["message"] and "bash" in r.json()["message"]


def test_expired_session_is_reported_once_then_cleaned(server_factory):
    srv = server_factory({"server": {"session_ttl": 1, "cleanup_interval": 0.3}})
    w = wid()
    created = srv.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]
    run(srv, w, "setsid sleep 1000 > /dev/null 2>&1 & sleep 0.3")  # a detached job the cleaner must end
    workspace = srv.workspace_of(created["session_id"])
    time.sleep(2.5)
    assert not workspace.exists()  # the cleaner ended it without any request
    expired = run(srv, w, "echo hi")
    assert expired["code"] == 1003 and "expired" in expired["message"]
    again = run(srv, w, "echo hi")
    assert again["code"] == 0 and again["meta"]["temporary_session"] is True
    engine = create_engine(srv.db_url)
    with engine.connect() as conn:
        status = conn.execute(text("select status, end_reason from sessions where id = :i"),
                              {"i": created["session_id"]}).one()
    assert status[0] == "expired" and "ttl" in status[1]
    import subprocess
    assert subprocess.run(["pgrep", "-f", "sleep 1000"], capture_output=True).stdout == b""


def test_sessions_are_shared_across_worker_processes(server):
    """A session created through one gunicorn worker is used through the others."""
    from concurrent.futures import ThreadPoolExecutor

    w = wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    run(server, w, "export COUNT_FROM=shared")
    engine = create_engine(server.db_url)
    with ThreadPoolExecutor(16) as pool:
        for _ in range(10):
            outs = list(pool.map(lambda _: run(server, w, 'echo "$COUNT_FROM"'), range(16)))
            assert all(o["data"]["stdout"] == "shared\n" for o in outs)
            with engine.connect() as conn:
                pids = conn.execute(text("select distinct server_pid from tool_calls where worker_id = :w"),
                                    {"w": w}).all()
            if len(pids) >= 2:
                break
    assert len(pids) >= 2, "calls should have been served by more than one gunicorn worker"


def test_stopping_the_server_ends_live_sessions(server_factory):
    import subprocess

    srv = server_factory()
    w = wid()
    sid = srv.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]["session_id"]
    run(srv, w, "setsid sleep 4321 > /dev/null 2>&1 & sleep 0.3")
    workspace = srv.workspace_of(sid)
    srv.stop()  # SIGTERM: a graceful stop
    assert not workspace.exists()
    assert subprocess.run(["pgrep", "-f", "sleep 4321"], capture_output=True).stdout == b""
    with create_engine(srv.db_url).connect() as conn:
        assert conn.execute(text("select status from sessions where id = :i"), {"i": sid}).scalar() == "destroyed"


def test_a_removed_working_directory_falls_back_to_the_workspace(server):
    w = wid()
    created = server.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]
    run(server, w, "mkdir gone && cd gone")
    run(server, w, "rmdir ../gone")
    out = run(server, w, "pwd")
    assert out["code"] == 0 and out["data"]["stdout"].strip() == str(server.workspace_of(created["session_id"]))


def test_exit_code_and_exit_keep_state(server):
    w = wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    out = run(server, w, "export KEEP=yes; mkdir -p k; cd k; exit 7")
    assert out["code"] == 0 and out["data"]["exit_code"] == 7
    assert run(server, w, 'echo "$KEEP $(basename "$PWD")"')["data"]["stdout"] == "yes k\n"
