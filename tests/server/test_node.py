"""A single server is a node of a cluster of one: it registers, names itself in every
answer and audit row, keeps to its max_sessions, and refuses cluster settings that
cannot work (sqlite with a node_url)."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine, text

from agentflow.config import ConfigError, load_server_config
from tests.support.server import REPO


def wid() -> str:
    return f"n_{uuid.uuid4().hex[:8]}"


def _query(srv, sql: str, **params):
    engine = create_engine(srv.db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def test_node_registers_and_names_itself_in_answers_and_audit(server_factory):
    srv = server_factory({"server": {"node_id": "node-a"}, "resources": {"bash": {}, "diag": {}}})
    w = wid()
    created = srv.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    assert created["meta"]["node_id"] == "node-a"
    out = srv.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": "true"}}).json()
    assert out["code"] == 0 and out["meta"]["node_id"] == "node-a"
    assert _query(srv, "select node_id from sessions where worker_id = :w", w=w) == [("node-a",)]
    assert _query(srv, "select node_id from tool_calls where worker_id = :w", w=w) == [("node-a",)]
    ((status, url, lease_left),) = _query(srv, "select status, url, lease_expires_at > heartbeat_at from nodes")
    assert status == "live" and url == f"http://127.0.0.1:{srv.port}" and lease_left


def test_cluster_status_lists_the_node_with_its_sessions(server_factory):
    srv = server_factory({"server": {"node_id": "node-s"}, "resources": {"bash": {}}})
    w = wid()
    assert srv.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["code"] == 0
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "cluster", "status", "--json",
                          "--database-url", srv.db_url], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (node,) = json.loads(out.stdout)["nodes"]
    assert node["node_id"] == "node-s" and node["status"] == "live" and node["live_sessions"] == 1
    assert 0 <= node["lease_age_s"] < 15
    table = subprocess.run([sys.executable, "-m", "agentflow.cli", "cluster", "status", "--database-url",
                            srv.db_url], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "node-s" in table and "live" in table


def test_a_node_at_capacity_refuses_new_sessions_with_503_and_retry_after(server_factory):
    srv = server_factory({"server": {"max_sessions": 2}, "resources": {"bash": {}}})
    for _ in range(2):
        assert srv.post("/session/create", {"worker_id": wid(), "resource_type": "bash"}).json()["code"] == 0
    full = srv.post("/session/create", {"worker_id": wid(), "resource_type": "bash"})
    assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
    body = full.json()
    assert body["code"] == 2003 and "max_sessions 2" in body["message"]
    # a call without a session still runs (temporary sessions do not count), and a
    # freed place is taken again
    assert srv.post("/execute", {"worker_id": wid(), "action": "bash:run",
                                 "params": {"command": "true"}}).json()["code"] == 0
    (w,) = _query(srv, "select worker_id from sessions where status = 'active' limit 1")[0]
    assert srv.post("/session/destroy", {"worker_id": w, "resource_type": "bash"}).json()["code"] == 0
    assert srv.post("/session/create", {"worker_id": wid(), "resource_type": "bash"}).json()["code"] == 0


@pytest.mark.parametrize("server, env, message", [
    ({"node_url": "http://10.0.0.5:18890"}, {}, "a cluster needs PostgreSQL"),
    ({}, {"AGENTFLOW_NODE_URL": "http://10.0.0.5:18890"}, "a cluster needs PostgreSQL"),
    ({"node_url": "ftp://x"}, {"AGENTFLOW_DATABASE_URL": "postgresql+psycopg://h/db"}, "http:// or https:// URL"),
    ({"node_id": "../a"}, {}, "server.node_id must be"),
    ({"node_id": ""}, {}, "server.node_id must be"),
    ({"node_lease": 0.1}, {}, "node_lease must be a number >= 0.5"),
    ({"node_lease": "soon"}, {}, "node_lease must be a number"),
    ({}, {"AGENTFLOW_NODE_LEASE": "0"}, "AGENTFLOW_NODE_LEASE must be a number >= 0.5"),
    ({"max_sessions": -1}, {}, "max_sessions must be an integer >= 0"),
    ({"max_sessions": "many"}, {}, "max_sessions must be an integer"),
])
def test_bad_cluster_settings_are_refused_with_a_clear_message(tmp_path, server, env, message):
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"server": server}))
    with pytest.raises(ConfigError, match=message):
        load_server_config(path, env={"AGENTFLOW_HOME": str(tmp_path), **env})


def test_serve_refuses_a_node_url_on_sqlite_before_starting(tmp_path):
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "serve", "--port", "1"], cwd=REPO,
                         env={"PATH": "/usr/bin:/bin", "AGENTFLOW_HOME": str(tmp_path),
                              "AGENTFLOW_NODE_URL": "http://10.0.0.5:18890"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "a cluster needs PostgreSQL" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("node_state", ["lost", "lease expired"])
def test_a_retry_of_a_request_another_machine_was_running_when_its_node_died_gets_2004(server_factory, node_state):
    """A claim held by a process on another machine (its pid cannot be checked from
    here) is ended when that machine's node is gone, not after the long stale timeout."""
    import datetime as dt
    import hashlib

    srv = server_factory({"resources": {"bash": {}}})
    w, rid = wid(), uuid.uuid4().hex
    body = json.dumps({"worker_id": w, "action": "bash:run", "params": {"command": "touch /tmp/once"}})
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    lease_end = now - dt.timedelta(seconds=30) if node_state == "lease expired" else now
    engine = create_engine(srv.db_url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into nodes (node_id, url, version, capacity, status, host, incarnation, started_at, heartbeat_at,"
            " lease_expires_at, lost_at) values ('far-away', 'http://10.9.9.9:1', 'x', 0, :st, 'far', 'i', :t, :t,"
            " :le, null)"), {"st": "lost" if node_state == "lost" else "live", "t": now, "le": lease_end})
        conn.execute(text(
            "insert into requests (request_id, endpoint, body_sha256, status, owner, created_at, node_id) values"
            " (:r, 'execute', :h, 'pending', 'far~00000000~4026531836:4242:99', :t, 'far-away')"),
            {"r": rid, "h": hashlib.sha256(body.encode()).hexdigest(), "t": now})
    engine.dispose()
    answer = srv.post("/execute", headers={"X-Request-ID": rid, "Content-Type": "application/json"},
                      data=body, timeout=30).json()
    assert answer["code"] == 2004, answer
    assert "far-away" in answer["data"]["reason"] and "lost" in answer["data"]["reason"]


def test_the_node_url_host_is_allowed_even_when_allowed_hosts_is_configured():
    """Forwarded calls arrive with the Host of this node's node_url: a configured
    allowed_hosts list (for the balancer's name) must not turn them into 421."""
    from agentflow.config import ServerConfig
    from agentflow.server.guard import HostPolicy

    policy = HostPolicy(ServerConfig(allowed_hosts=["sandbox.internal"], node_url="http://Node-1.internal:18890"))
    assert policy.host_allowed("node-1.internal", None) and policy.host_allowed("sandbox.internal", None)
    assert not policy.host_allowed("evil.example", None)
