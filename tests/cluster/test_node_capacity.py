"""Placement on a cluster of three nodes with ``max_sessions`` 2 each (its own cluster:
the test fills every node): a node at capacity places a new session on another live
node with room; when every node is full the create is refused with HTTP 503,
``Retry-After`` and code 2003; a destroyed session makes room again."""
from __future__ import annotations

import uuid

import pytest

from tests.support.cluster import cluster_problem, start_cluster

PER_NODE = 2

pytestmark = pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")


@pytest.fixture(scope="module")
def cluster(postgres_url, tmp_path_factory, request):
    failed_before = request.session.testsfailed
    with start_cluster(tmp_path_factory.mktemp("cluster-capacity"), postgres_url, node_lease=3,
                       max_sessions=PER_NODE) as c:
        yield c
        c.report_if_failed(request, failed_before)


def _owners(cluster) -> dict[str, int]:
    rows = cluster.sql("select node_id, count(*) as n from sessions where status = 'active' "
                       "and temporary = false group by node_id")
    return {r["node_id"]: r["n"] for r in rows}


def test_a_full_node_places_sessions_elsewhere_and_a_full_cluster_answers_503(cluster):
    made = []

    def create(node=None):
        worker = f"cap-{uuid.uuid4().hex[:6]}"
        resp = cluster.create_session(worker, "bash", node=node)
        return worker, resp

    # node-a fills up with the sessions created at it…
    for _ in range(PER_NODE):
        worker, resp = create("node-a")
        assert resp.status_code == 200 and resp.json()["code"] == 0, resp.text
        made.append(worker)
        assert cluster.session_row(resp.json()["data"]["session_id"])["node_id"] == "node-a"
    # …then places the next ones on the least-loaded live node with room
    for _ in range(2 * PER_NODE):
        worker, resp = create("node-a")
        assert resp.status_code == 200 and resp.json()["code"] == 0, resp.text
        made.append(worker)
        sid = resp.json()["data"]["session_id"]
        assert cluster.session_row(sid)["node_id"] in ("node-b", "node-c")
        out = cluster.execute(worker, "bash:run", {"command": "echo placed"}, node="node-a")  # forwarded
        assert out["code"] == 0 and out["data"]["stdout"] == "placed\n", out
    assert _owners(cluster) == {name: PER_NODE for name in cluster.nodes}

    # every node full: 503 + Retry-After + 2003, wherever the create lands
    for node in (None, "node-a", "node-b", "node-c"):
        worker, resp = create(node)
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["Retry-After"]) >= 1, resp.headers
        body = resp.json()
        assert body["code"] == 2003, body
        assert "max_sessions" in body["message"] or "capacity" in body["message"] or "full" in body["message"], body
    assert cluster.sql("select count(*) as n from sessions where worker_id like 'cap-%' and status = 'active'")[0][
        "n"] == 3 * PER_NODE

    # a destroyed session makes room again
    gone = made.pop(0)
    assert cluster.destroy_session(gone, "bash").json()["code"] == 0
    worker, resp = create()
    assert resp.status_code == 200 and resp.json()["code"] == 0, resp.text
    made.append(worker)
    assert cluster.session_row(resp.json()["data"]["session_id"])["node_id"] == "node-a"
    for worker in made:
        cluster.destroy_session(worker, "bash")
