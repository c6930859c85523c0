"""Hostile and faulty input: the server answers clearly, stays healthy, audits every call."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text


def wid() -> str:
    return f"w_{uuid.uuid4().hex[:8]}"


def bash(server, worker, command, timeout=None, headers=None):
    params = {"command": command}
    if timeout:
        params["timeout"] = timeout
    return server.post("/execute", {"worker_id": worker, "action": "bash:run", "params": params},
                       headers=headers or {}).json()


def audit_count(server, **where) -> int:
    clause = " and ".join(f"{k} = :{k}" for k in where) or "1=1"
    with create_engine(server.db_url).connect() as conn:
        return conn.execute(text(f"select count(*) from tool_calls where {clause}"), where).scalar()


def test_fork_bomb_is_contained(server):
    w = wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    out = bash(server, w, ":(){ :|:& };:", timeout=3)
    assert out["code"] in (0, 2002)
    time.sleep(0.5)
    uid = bash(server, w, "id -u")["data"]["stdout"].strip()
    # what may stay: the session's jail (bwrap, its init), supervisor and its warm spare shell
    ps = subprocess.run(["ps", "-u", uid, "-o", "stat=,comm="], capture_output=True, text=True).stdout.splitlines()
    alive = [line.split()[-1] for line in ps if not line.split()[0].startswith("Z")
             and line.split()[-1] not in ("bwrap", "python", "python3", "python3.11")]
    assert alive in ([], ["bash"]), f"fork bomb processes left running: {alive}"
    assert server.get("/health").status_code == 200
    assert bash(server, wid(), "echo alive")["data"]["stdout"] == "alive\n"


def test_memory_hog_fails_without_hurting_the_server(server):
    out = bash(server, wid(), "python3 -c 'x = bytearray(8 * 1024**3)'", timeout=20)
    assert out["code"] == 0 and out["data"]["exit_code"] != 0
    # the session's cgroup limit: the kernel's OOM killer ends the process
    assert "MemoryError" in out["data"]["stderr"] or "Killed" in out["data"]["stderr"]
    assert server.get("/health").status_code == 200


def test_output_flood_is_capped_and_sized(server):
    out = bash(server, wid(), "head -c 5000000 /dev/zero | tr '\\0' x", timeout=20)
    data = out["data"]
    assert out["code"] == 0 and data["stdout_truncated"] is True
    assert data["stdout_bytes"] == 5_000_000 and len(data["stdout"]) == 64 * 1024


def test_infinite_loop_times_out(server):
    t0 = time.monotonic()
    out = bash(server, wid(), "while :; do :; done", timeout=1)
    assert out["code"] == 2002 and time.monotonic() - t0 < 10


def test_sessions_cannot_read_each_others_workspace(server):
    a, b = wid(), wid()
    sa = server.post("/session/create", {"worker_id": a, "resource_type": "bash"}).json()["data"]
    server.post("/session/create", {"worker_id": b, "resource_type": "bash"})
    bash(server, a, "echo private > note.txt")
    out = bash(server, b, f"cat {server.workspace_of(sa['session_id'])}/note.txt")
    assert out["data"]["exit_code"] != 0 and "private" not in out["data"]["stdout"]


def test_server_secrets_do_not_reach_commands(server_factory):
    srv = server_factory(token="tok-123")
    out = bash(srv, wid(), 'echo "[$AGENTFLOW_API_TOKEN]"', headers=srv.headers())
    assert out["data"]["stdout"] == "[]\n"


def test_body_over_the_limit_is_1000(server_factory):
    srv = server_factory({"server": {"max_request_bytes": 2048}})
    r = srv.post("/execute", {"worker_id": "w", "action": "bash:run", "params": {"command": "x" * 5000}})
    assert r.status_code == 413 and r.json()["code"] == 1000 and "2048" in r.json()["message"]
    assert srv.get("/health").status_code == 200


def test_token_is_required_everywhere_but_health(server_factory):
    srv = server_factory(token="s3cret")
    assert requests.get(srv.url + "/health", timeout=5).status_code == 200
    for method, path in (("post", "/execute"), ("get", "/tools"), ("post", "/session/list"),
                         ("get", "/warmup/status"), ("post", "/shutdown"), ("get", "/openapi.json")):
        r = requests.request(method, srv.url + path, json={"worker_id": "w", "action": "diag:noop"}, timeout=5)
        assert r.status_code == 401 and r.json()["code"] == 1004 and "missing bearer token" in r.json()["message"]
    wrong = requests.post(srv.url + "/execute", json={"worker_id": "w", "action": "diag:noop"},
                          headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and "wrong bearer token" in wrong.json()["message"]
    ok = srv.post("/execute", {"worker_id": "w", "action": "diag:noop"})
    assert ok.json()["code"] == 0
    assert audit_count(srv) == 1  # refused requests ran nothing


def test_shutdown_cleans_sessions_and_stops(server_factory):
    srv = server_factory()
    w = wid()
    sid = srv.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]["session_id"]
    r = srv.post("/shutdown", {"cleanup_sessions": True}).json()
    assert r["code"] == 0 and r["data"]["sessions_cleaned"] == 1
    srv.proc.wait(20)
    assert not srv.workspace_of(sid).exists()


def test_shutdown_with_token_needs_the_token(server_factory):
    srv = server_factory(token="abc")
    r = requests.post(srv.url + "/shutdown", json={}, timeout=5)
    assert r.status_code == 401 and srv.proc.poll() is None


def test_retried_request_id_runs_once(server):
    import tempfile
    from pathlib import Path

    w = wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    headers = {"X-Request-ID": uuid.uuid4().hex}
    body = {"worker_id": w, "action": "bash:run", "params": {"command": "echo run >> count.txt; echo done"}}
    first = server.post("/execute", body, headers=headers).json()
    second = server.post("/execute", body, headers=headers).json()
    assert first["code"] == 0 and second["data"] == first["data"]
    assert second["meta"]["replayed"] is True and "replayed" not in first["meta"]
    assert bash(server, w, "cat count.txt")["data"]["stdout"] == "run\n"
    assert audit_count(server, request_id=headers["X-Request-ID"]) == 1


def test_concurrent_duplicate_waits_for_the_first(server):
    headers = {"X-Request-ID": uuid.uuid4().hex}
    body = {"worker_id": wid(), "action": "diag:sleep", "params": {"seconds": 1}}
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: server.post("/execute", body, headers=headers).json(), range(2))
    assert a["code"] == b["code"] == 0
    assert sorted([bool(a["meta"].get("replayed")), bool(b["meta"].get("replayed"))]) == [False, True]
    assert audit_count(server, request_id=headers["X-Request-ID"]) == 1


def test_32_concurrent_clients_get_their_own_results(server):
    workers = [wid() for _ in range(32)]

    def client(w):
        created = server.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
        assert created["code"] == 0, created
        outs = []
        for i in range(5):
            bash(server, w, f"export N={i}")
            outs.append(bash(server, w, 'echo "$N"')["data"]["stdout"])
        return outs

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(client, workers))
    bad = [r for r in results if r != [f"{i}\n" for i in range(5)]]
    assert not bad, bad[:3]
    for w in workers:
        assert audit_count(server, worker_id=w) == 10


@pytest.mark.slow
def test_killed_worker_loses_nothing_acknowledged(server_factory):
    srv = server_factory(workers=3)
    acknowledged, errors = [], []
    stop = threading.Event()

    def client(n):
        session = requests.Session()
        while not stop.is_set():
            w = f"kill_{n}"
            try:
                r = session.post(srv.url + "/execute", json={"worker_id": w, "action": "diag:sleep",
                                                              "params": {"seconds": 0.05}}, timeout=30)
                acknowledged.append(r.json()["meta"]["request_id"])
            except requests.RequestException as err:
                errors.append(err)
                session = requests.Session()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim = srv.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert srv.get("/health").status_code == 200
    with create_engine(srv.db_url).connect() as conn:
        stored = {r[0] for r in conn.execute(text("select request_id from tool_calls"))}
    missing = [rid for rid in acknowledged if rid not in stored]
    assert acknowledged and not missing, f"{len(missing)} acknowledged calls have no audit row"


def test_every_execute_is_audited_with_masked_secrets(server):
    w = wid()
    server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": {"api_key": "sk-1", "x": 1}}})
    server.post("/execute", {"worker_id": w, "action": "nope:nope", "params": {}})
    server.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": 1}})
    with create_engine(server.db_url).connect() as conn:
        rows = conn.execute(text("select action, code, params, result_sha256, result_size from tool_calls "
                                 "where worker_id = :w order by id"), {"w": w}).all()
    assert [(r[0], r[1]) for r in rows] == [("diag:echo", 0), ("nope:nope", 1001), ("bash:run", 1002)]
    assert "sk-1" not in rows[0][2] and "***" in rows[0][2]
    assert len(rows[0][3]) == 64 and rows[0][4] > 0


def test_background_jobs_end_with_the_command_unless_detached(server):
    w = wid()
    server.post("/session/create", {"worker_id": w, "resource_type": "bash"})
    bash(server, w, "sleep 777 & setsid sleep 778 > /dev/null 2>&1 & sleep 0.3")
    time.sleep(0.3)
    assert subprocess.run(["pgrep", "-f", "sleep 777"], capture_output=True).stdout == b""
    assert subprocess.run(["pgrep", "-f", "sleep 778"], capture_output=True).stdout != b""
    server.post("/session/destroy", {"worker_id": w, "resource_type": "bash"})
    time.sleep(0.3)
    assert subprocess.run(["pgrep", "-f", "sleep 778"], capture_output=True).stdout == b""
