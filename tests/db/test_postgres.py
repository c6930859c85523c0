"""AgentFlow on PostgreSQL by URL: migrations, and servers sharing one database."""
from __future__ import annotations

import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from agentflow.db.engine import alembic_config, upgrade


def test_migrations_on_postgres(postgres_url):
    upgrade(postgres_url)
    command.check(alembic_config(postgres_url))  # models and migrations agree on PostgreSQL too
    tables = set(inspect(create_engine(postgres_url)).get_table_names())
    assert {"sessions", "tool_calls", "requests", "rollout_runs"} <= tables


def test_two_servers_share_sessions_and_audit_through_postgres(postgres_url, server_factory):
    """Several servers (as behind a load balancer) on one PostgreSQL database and one
    workspace folder: a session made through one is used through the other."""
    shared = Path(tempfile.mkdtemp(prefix="agentflow-ws-"))
    os.chmod(shared, 0o711)
    config = {"server": {"database_url": postgres_url, "workspace_dir": str(shared)},
              "resources": {"bash": {}, "diag": {}}}
    a, b = server_factory(config), server_factory(config)
    w = f"pg_{uuid.uuid4().hex[:8]}"
    created = a.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()
    assert created["code"] == 0
    assert b.post("/session/create", {"worker_id": w, "resource_type": "bash"}).json()["data"]["created"] is False
    a.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": "export WHERE=server_a"}})
    out = b.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": 'echo "$WHERE"'}}).json()
    assert out["data"]["stdout"] == "server_a\n" and out["meta"]["session_id"] == created["data"]["session_id"]

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
