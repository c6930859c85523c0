"""AgentFlow on PostgreSQL by URL: migrations, and servers sharing one database."""
from __future__ import annotations

import os
import socket
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from agentflow.db.engine import alembic_config, upgrade
from tests.support.server import start_server


def test_migrations_on_postgres(postgres_url):
    upgrade(postgres_url)
    command.check(alembic_config(postgres_url))  # models and migrations agree on PostgreSQL too
    tables = set(inspect(create_engine(postgres_url)).get_table_names())
    assert {"sessions", "tool_calls", "requests", "rollout_runs"} <= tables


def test_two_servers_share_sessions_and_audit_through_postgres(postgres_url, server_factory):
    """Several servers (as behind a load balancer) on one PostgreSQL database, each with
    its own workspaces: a session made through one is used through the other, which
    forwards the calls to the session's node."""
    config = {"server": {"database_url": postgres_url}, "resources": {"bash": {}, "diag": {}}}
    a, b = server_factory(config), server_factory(config)
    w = f"pg_{uuid.uuid4().hex[:8]}"
    created = a.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    assert created["code"] == 0
    assert b.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]["created"] is False
    a.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": "export WHERE=server_a"}})
    out = b.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": 'echo "$WHERE"'}}).json()
    assert out["data"]["stdout"] == "server_a\n" and out["meta"]["session_id"] == created["data"]["session_id"]
    assert out["meta"]["node_id"] == created["meta"]["node_id"] == f"{socket.gethostname()}:{a.port}"

    # a retry that lands on the other server is replayed, not rerun
    rid = uuid.uuid4().hex
    body = {"worker_id": w, "action": "bash:run", "params": {"command": "echo $RANDOM"}}
    first = a.post("/execute", body, headers={"X-Request-ID": rid}).json()
    second = b.post("/execute", body, headers={"X-Request-ID": rid}).json()
    assert second["meta"].get("replayed") is True and second["data"] == first["data"]

    def calls(server, n):
        return [server.post("/execute", {"worker_id": f"{w}_{n}", "action": "diag:noop"}).json()["code"]
                for _ in range(10)]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for res in pool.map(lambda n: calls(a if n % 2 else b, n), range(16)) for c in res]
    assert codes == [0] * 160
    with create_engine(postgres_url).connect() as conn:
        audited = conn.execute(text("select count(*) from tool_calls where worker_id like :w"),
                               {"w": f"{w}%"}).scalar()
        assert audited == 3 + 160
        assert conn.execute(text("select count(*) from tool_calls where request_id = :r"), {"r": rid}).scalar() == 1
    assert a.post("/session/destroy", {"worker_id": w, "resource_type": "bash"}).json()["code"] == 0
    assert b.post("/session/list", {"worker_id": w}).json()["data"]["sessions"] == []


def test_a_killed_node_is_lost_within_its_lease_and_never_comes_back(postgres_url, server_factory):
    """kill -9 of the node owning a session: within the lease, calls for the session
    answer 1003 saying the node is gone (never a hang), the worker's next session is
    made on a live node, and the node restarted later does not bring the session back."""
    import time

    config = {"server": {"database_url": postgres_url, "node_lease": 2}, "resources": {"bash": {}}}
    a, b = server_factory(config), server_factory(config)
    w = f"pg_{uuid.uuid4().hex[:8]}"
    sid = a.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]["session_id"]
    call = {"worker_id": w, "action": "bash:run", "params": {"command": "echo hi"}}
    assert b.post("/execute", call).json()["meta"]["node_id"].endswith(f":{a.port}")
    a.kill()
    killed = time.monotonic()
    answer = b.post("/execute", call, timeout=30).json()
    took = time.monotonic() - killed
    assert answer["code"] == 1003 and answer["data"]["node_lost"] is True, answer
    assert answer["data"]["session_id"] == sid and "gone" in answer["message"]
    assert took < 2 + 1.5, f"1003 came {took:.1f} s after the kill; the lease is 2 s"
    created = b.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    assert created["code"] == 0 and created["data"]["created"] is True and created["meta"]["node_id"].endswith(
        f":{b.port}")
    with create_engine(postgres_url).connect() as conn:
        deadline = time.monotonic() + 10
        while conn.execute(text("select status from sessions where id = :i"), {"i": sid}).scalar() != "lost":
            assert time.monotonic() < deadline, "the lost node's session was not marked lost"
            time.sleep(0.2)
            conn.rollback()
    back = start_server(a.home, config={**config}, port=a.port)
    try:
        out = back.post("/execute", call).json()
        assert out["meta"]["session_id"] != sid and out["meta"]["node_id"].endswith(f":{b.port}")
        with create_engine(postgres_url).connect() as conn:
            assert conn.execute(text("select status from sessions where id = :i"), {"i": sid}).scalar() == "lost"
    finally:
        back.stop()
