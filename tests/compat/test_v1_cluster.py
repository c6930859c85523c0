"""``/api/v1`` in a cluster: a reference-protocol call that enters at a node other than
its session's owner is forwarded there (the same path on the owner), as ours are — for
execute, batch, session/destroy and worker/disconnect."""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.support.cluster import cluster_problem, start_cluster

pytestmark = pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")


@pytest.fixture(scope="module")
def cluster(postgres_url, tmp_path_factory, request):
    failed_before = request.session.testsfailed
    with start_cluster(tmp_path_factory.mktemp("v1cluster"), postgres_url, nodes=2, node_lease=3.0) as c:
        yield c
        c.report_if_failed(request, failed_before)


def _post(cluster, node: str, path: str, body: dict) -> requests.Response:
    return requests.post(cluster.url(node) + path, json=body, timeout=120,
                         headers={**cluster.headers(), "X-Worker-ID": body.get("worker_id", "")})


def test_reference_calls_are_forwarded_to_the_sessions_node(cluster):
    worker = f"worker_{uuid.uuid4().hex[:8]}"
    created = _post(cluster, "node-a", "/api/v1/session/create",
                    {"worker_id": worker, "resource_type": "code", "session_config": {}, "custom_name": None}).json()
    assert created["code"] == 0, created
    owner = cluster.session_row(created["data"]["session_id"])["node_id"]
    other = next(n for n in cluster.nodes if n != owner)
    first = _post(cluster, owner, "/api/v1/execute", {"worker_id": worker, "action": "code:run",
                                                      "params": {"code": "counter = 41"}, "timeout": None}).json()
    assert first["code"] == 0, first
    moved = _post(cluster, other, "/api/v1/execute", {"worker_id": worker, "action": "code:run",
                                                      "params": {"code": "counter + 1"}, "timeout": None}).json()
    assert moved["code"] == 0 and moved["data"]["result"] == "42", moved
    assert moved["meta"]["node_id"] == owner and moved["meta"]["agentflow_code"] == 0
    batch = _post(cluster, other, "/api/v1/execute/batch", {
        "worker_id": worker, "actions": [{"action": "code:run", "params": {"code": "print(counter)"}}],
        "parallel": False, "stop_on_error": True}).json()
    assert batch["code"] == 0 and batch["data"]["results"][0]["data"]["result"] == "41\n", batch
    assert _post(cluster, other, "/api/v1/session/create", {"worker_id": worker, "resource_type": "bash",
                                                            "session_config": {}}).json()["code"] == 0
    destroyed = _post(cluster, other, "/api/v1/session/destroy", {"worker_id": worker, "resource_type": "code"})
    assert destroyed.status_code == 200 and destroyed.json()["data"]["session_id"] == created["data"]["session_id"]
    gone = _post(cluster, other, "/api/v1/worker/disconnect", {"worker_id": worker}).json()
    assert gone["data"]["sessions_cleaned"] == 1 and gone["meta"]["node_id"] == owner
    rows = cluster.sql("select resource_type, status, node_id from sessions where worker_id = :w", w=worker)
    assert {(r["resource_type"], r["status"], r["node_id"]) for r in rows} == {
        ("code", "destroyed", owner), ("bash", "destroyed", owner)}
