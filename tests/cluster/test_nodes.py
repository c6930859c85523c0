"""Three sandbox nodes on one PostgreSQL behind nginx (round robin, no stickiness), each
in its own mount namespace (tests/support/cluster.py): sessions keep their state while
their calls enter at every node (forwarded to the owner), a node cannot reach another
node's sessions on its own, a node that dies turns its sessions into 1003 within its
lease, and `agentflow cluster status` shows the cluster.

The tests run in file order on one cluster (started once for the module): the node
kill comes last."""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.support.cluster import cluster_problem, start_cluster

LEASE = 3.0

pytestmark = pytest.mark.skipif(cluster_problem() is not None, reason=cluster_problem() or "")


@pytest.fixture(scope="module")
def cluster(postgres_url, tmp_path_factory, request):
    failed_before = request.session.testsfailed
    with start_cluster(tmp_path_factory.mktemp("cluster"), postgres_url, node_lease=LEASE) as c:
        yield c
        c.report_if_failed(request, failed_before)


def _worker(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"


def _owner(cluster, session_id: str) -> str:
    return cluster.session_row(session_id)["node_id"]


_ERRORS = re.compile(r"Traceback|\[ERROR\]|^ERROR |^CRITICAL |agentflow: error", re.M)


def test_nodes_started_together_migrate_the_empty_database_once(cluster):
    """The harness started all three at the same moment on an empty database."""
    from agentflow.db.engine import current_revision

    versions = cluster.sql("select version_num from alembic_version")
    assert len(versions) == 1 and versions[0]["version_num"] == current_revision(cluster.db_url)
    for node in cluster.nodes.values():
        assert not _ERRORS.findall(node.log_text()), f"{node.name}:\n{node.log_text()}"
    rows = {r["node_id"]: r for r in cluster.sql("select * from nodes")}
    assert set(rows) == set(cluster.nodes)
    for name, node in cluster.nodes.items():
        assert rows[name]["status"] == "live"
        assert rows[name]["url"].rstrip("/") == node.url
        assert rows[name]["lease_expires_at"] > rows[name]["heartbeat_at"]


def test_the_harness_isolates_the_nodes(cluster):
    """Each node sees only its own files: a session's workspace (and the control socket
    beside it) resolves on its owner and nowhere else — not on the other nodes, not on
    the host at that path."""
    a, b, c = (cluster.nodes[n] for n in ("node-a", "node-b", "node-c"))
    worker = _worker("iso")
    created = cluster.create_session(worker, "bash", node="node-a")
    assert created.status_code == 200, created.text
    sid = created.json()["data"]["session_id"]
    try:
        assert _owner(cluster, sid) == "node-a"
        workspace = cluster.session_row(sid)["workspace"]
        assert workspace.startswith(str(a.workspace_dir))
        assert a.sees(workspace) and a.sees(a.workspace_dir / ".control")
        assert not b.sees(workspace) and not c.sees(workspace)
        assert not b.sees(a.workspace_dir / ".control")
        assert not (a.root / "home").exists(), "the host's view of a node's path is an empty folder"
        # what node B's server process can open (its mount namespace), by path
        seen = b.run_inside(["ls", "-a", workspace])
        assert seen.returncode != 0 and "No such file" in seen.stderr, seen
        assert a.run_inside(["ls", "-a", workspace]).returncode == 0
        # every node's data dir is its own (b's database of uid slots, sockets, logs…)
        assert b.run_inside(["ls", str(a.data_dir)]).returncode != 0
        # and a session on node B cannot reach it either
        other = _worker("iso-b")
        out = cluster.execute(other, "bash:run", {"command": f"ls -a {workspace}"}, node="node-b")
        assert out["meta"].get("node_id") == "node-b"
        assert out["code"] != 0 or out["data"]["exit_code"] != 0, out
    finally:
        cluster.destroy_session(worker, "bash", node="node-a")


def test_a_call_that_is_not_forwarded_fails_instead_of_reaching_the_owner(cluster):
    """Pretend node B owns node A's session (as a forwarding bug would): B's attempt to
    run it fails — it cannot reach A's kernel — instead of quietly answering with A's
    variables."""
    worker = _worker("nofwd")
    assert cluster.create_session(worker, "code", node="node-a").json()["code"] == 0
    try:
        first = cluster.execute(worker, "code:run", {"code": "secret = 'only-on-a'; print(secret)"}, node="node-a")
        assert first["code"] == 0 and first["data"]["stdout"] == "only-on-a\n", first
        sid = first["meta"]["session_id"]
        cluster.sql("update sessions set node_id = 'node-b' where id = :i", i=sid)
        try:
            out = cluster.execute(worker, "code:run", {"code": "print(secret)"}, node="node-b")
            assert "only-on-a" not in json.dumps(out), out
            assert out["code"] != 0 and out["meta"].get("node_id") == "node-b", out  # B tried, and could not
        finally:
            cluster.sql("update sessions set node_id = 'node-a' where id = :i", i=sid)
    finally:
        cluster.destroy_session(worker, "code", node="node-a")


def test_a_code_session_keeps_its_variables_across_calls_entering_at_every_node(cluster):
    worker = _worker("code")
    with cluster.sandbox(worker) as sandbox:
        created = sandbox.create_session_sync("code")
        assert created["code"] == 0, created
        sid = created["data"]["session_id"]
        owner = _owner(cluster, sid)
        assert owner in cluster.nodes
        assert sandbox.execute_sync("code:run", {"code": "counter = 0"})["code"] == 0
        request_ids = []
        for i in range(1, 51):
            out = sandbox.execute_sync("code:run", {"code": "counter += 1\nprint(counter)"})
            assert out["code"] == 0, out
            assert out["data"]["stdout"] == f"{i}\n", out
            assert out["meta"]["session_id"] == sid and out["meta"]["node_id"] == owner, out["meta"]
            request_ids.append(out["meta"]["request_id"])
        sandbox.destroy_session_sync("code")
    entered = cluster.entry_nodes(request_ids)
    assert len(entered) == 50
    assert set(entered.values()) == set(cluster.nodes), entered  # nginx spread them over all three
    forwarded = [r for r in request_ids if entered[r] != owner]
    assert len(forwarded) >= 25  # two nodes out of three forwarded theirs to the owner
    audited = cluster.sql("select node_id, count(*) as n from tool_calls where session_id = :s "
                          "and action = 'code:run' group by node_id", s=sid)
    assert {r["node_id"]: r["n"] for r in audited} == {owner: 51}  # the audit row names the node that ran it


def test_a_bash_session_keeps_cd_and_export_across_nodes(cluster):
    worker = _worker("bash")
    with cluster.sandbox(worker) as sandbox:
        assert sandbox.create_session_sync("bash")["code"] == 0
        first = sandbox.execute_sync("bash:run", {"command": "mkdir -p deep/er && cd deep/er && export MARK=m0"})
        assert first["code"] == 0, first
        owner = first["meta"]["node_id"]
        request_ids = []
        for i in range(1, 13):
            out = sandbox.execute_sync("bash:run", {"command": f'echo "$(basename "$PWD") $MARK"; export MARK=m{i}'})
            assert out["code"] == 0, out
            assert out["data"]["stdout"] == f"er m{i - 1}\n", out
            assert out["meta"]["node_id"] == owner
            request_ids.append(out["meta"]["request_id"])
        sandbox.destroy_session_sync("bash")
    assert set(cluster.entry_nodes(request_ids).values()) == set(cluster.nodes)


def _status_nodes(data) -> dict[str, dict]:
    """The node entries of `agentflow cluster status --json`, by node_id."""
    nodes = data.get("nodes", data) if isinstance(data, dict) else data
    if isinstance(nodes, dict):
        return {str(k): ({"node_id": k, **v} if isinstance(v, dict) else {"node_id": k}) for k, v in nodes.items()}
    return {str(n["node_id"]): n for n in nodes}


def _live_sessions(entry: dict) -> int:
    for key in ("live_sessions", "sessions", "session_count", "load"):
        value = entry.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, list):
            return len(value)
    raise AssertionError(f"no session count in {entry}")


def test_cluster_status_lists_the_nodes_and_their_sessions(cluster):
    placed = {}
    workers = []
    for name in cluster.nodes:  # one session created at each node (a fresh worker stays where it lands)
        worker = _worker(f"st-{name}")
        resp = cluster.create_session(worker, "bash", node=name)
        assert resp.status_code == 200, resp.text
        placed[name] = _owner(cluster, resp.json()["data"]["session_id"])
        workers.append((worker, name))
    try:
        expected = {name: 0 for name in cluster.nodes}
        for row in cluster.sql("select node_id, count(*) as n from sessions "
                               "where status in ('starting', 'active') group by node_id"):
            expected[row["node_id"]] = row["n"]
        assert sum(expected.values()) >= 3 and set(placed.values()) == set(cluster.nodes)
        out = cluster.cli("cluster", "status", "--database-url", cluster.db_url, "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        listed = _status_nodes(json.loads(out.stdout))
        assert set(listed) == set(cluster.nodes), listed
        for name, entry in listed.items():
            assert entry.get("status") == "live", entry
            assert entry.get("url", cluster.nodes[name].url).rstrip("/") == cluster.nodes[name].url
            assert _live_sessions(entry) == expected[name], (entry, expected)
        text = cluster.cli("cluster", "status", "--database-url", cluster.db_url)
        assert text.returncode == 0, text.stdout + text.stderr
        for name in cluster.nodes:
            assert name in text.stdout and cluster.nodes[name].url in text.stdout, text.stdout
    finally:
        for worker, name in workers:
            cluster.destroy_session(worker, "bash", node=name)


_KILLED: dict = {}


def _timeline(answers: list[tuple]) -> str:
    """Answers after the kill, runs of the same outcome collapsed:
    ``0.02-20.04s: 165 x HTTP 200 code 0 (slowest 0.05s)``."""
    runs: list[list] = []
    for at, http, code, took, message in answers:
        if runs and runs[-1][2:4] == [http, code]:
            runs[-1][1], runs[-1][4], runs[-1][5] = at, runs[-1][4] + 1, max(runs[-1][5], took)
        else:
            runs.append([at, at, http, code, 1, took, message])
    return "; ".join(f"{a:.2f}-{b:.2f}s: {n} x HTTP {h} code {c} (slowest {t:.2f}s) {m!r}"
                     for a, b, h, c, n, t, m in runs)


def test_killing_the_owner_turns_calls_for_its_sessions_into_1003_within_the_lease(cluster):
    """kill -9 of node-c's master while a client keeps calling its session through the
    balancer: no call hangs, and within the lease the calls answer 1003 with
    ``data.node_lost`` — give or take 3 s: the second gunicorn workers take to notice
    their master is gone, the renewal and reaping periods (a fifth of the lease each),
    and a loaded CI machine. Workers that drain their keep-alive connections while
    renewing the node's lease (gunicorn's graceful stop, up to 20 s) fail this."""
    worker = _worker("lost")
    assert cluster.create_session(worker, "code", node="node-c").json()["code"] == 0
    before = cluster.execute(worker, "code:run", {"code": "secret = 42; print(secret)"})
    assert before["code"] == 0 and before["meta"]["node_id"] == "node-c", before
    sid = before["meta"]["session_id"]
    _KILLED.update(worker=worker, session_id=sid)

    killed = cluster.kill("node-c", wait_workers=0)
    answers, lost = [], None
    while time.monotonic() - killed.killed_at < 40:
        t0 = time.monotonic()
        resp = cluster.post("/execute", {"worker_id": worker, "action": "code:run",
                                         "params": {"code": "print(secret)"}}, timeout=60)
        took = time.monotonic() - t0
        if resp.status_code == 502 and "nginx" in resp.text:
            # a call in flight on node-c when its workers exited: the balancer answers 502
            # (it never re-sends a POST), which the client retries; not a hang, not a result
            answers.append((round(t0 - killed.killed_at, 2), 502, None, round(took, 2), "balancer: 502"))
            continue
        out = resp.json()
        answers.append((round(t0 - killed.killed_at, 2), resp.status_code, out["code"], round(took, 2),
                        out.get("message", "")[:90]))
        if out["code"] == 1003 and (out.get("data") or {}).get("node_lost"):
            lost = out
            break
        time.sleep(0.1)
    seen_after = time.monotonic() - killed.killed_at
    _KILLED.update(lost=lost is not None, killed=killed)
    assert lost is not None, f"no 1003 node_lost within 40 s of the kill: {_timeline(answers)}"
    assert lost["data"]["node_id"] == "node-c" and lost["data"]["session_id"] == sid, lost
    assert cluster.session_row(sid)["status"] == "lost"
    assert cluster.sql("select status from nodes where node_id = 'node-c'")[0]["status"] == "lost"
    slowest = max(a[3] for a in answers)
    assert slowest < LEASE + 2, f"a call for the dead node's session hung for {slowest:.1f}s: {_timeline(answers)}"
    assert seen_after <= LEASE + 3.0, (f"1003 only {seen_after:.1f}s after the kill (lease {LEASE}s): "
                                       f"{_timeline(answers)}")
    after = cluster.execute(worker, "code:run", {"code": "print(secret)"})
    assert "42" not in str((after.get("data") or {}).get("stdout", "")), after


def test_after_a_node_died_new_sessions_go_to_live_nodes_and_its_return_resurrects_nothing(cluster):
    assert _KILLED.get("lost"), "needs the previous test: node-c killed and its session lost"
    worker, sid = _KILLED["worker"], _KILLED["session_id"]
    cluster.wait_for(lambda: not _KILLED["killed"].workers_running(), 30, "node-c's workers to exit")
    # new sessions, through the balancer, go to the live nodes
    fresh = []
    for i in range(6):
        w = _worker(f"after-{i}")
        resp = cluster.create_session(w, "bash")
        assert resp.status_code == 200 and resp.json()["code"] == 0, resp.text
        fresh.append((w, resp.json()["data"]["session_id"]))
    owners = {_owner(cluster, s) for _, s in fresh}
    assert owners and owners <= {"node-a", "node-b"}, owners
    for w, _ in fresh:
        out = cluster.execute(w, "bash:run", {"command": "echo alive"})
        assert out["code"] == 0 and out["data"]["stdout"] == "alive\n", out

    # node-c comes back under the same node_id: its lost sessions stay lost
    cluster.start_node("node-c")
    cluster.wait_for(lambda: cluster.sql("select status from nodes where node_id = 'node-c'")[0]["status"] == "live",
                     LEASE * 3, "node-c to be live again")
    assert cluster.session_row(sid)["status"] == "lost"
    for node in ("node-c", "node-a", None):
        out = cluster.execute(worker, "code:run", {"code": "print(secret)"}, node=node)
        assert "42" not in json.dumps(out.get("data")), out  # the old kernel's state is not back
        assert out["code"] != 0 or out["meta"].get("session_id") != sid, out
    assert cluster.session_row(sid)["status"] == "lost"
    for w, _ in fresh:
        cluster.destroy_session(w, "bash")
