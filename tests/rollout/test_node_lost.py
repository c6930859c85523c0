"""A task whose sandbox node is lost mid-task: the real server answers its next tool call
with 1003 ``data.node_lost``; rollout keeps that try as an ``infra_error`` attempt with
its reason and tries the task again at once on a fresh session, up to ``max_attempts``.

The node loss is made the way a cluster sees it: the task's session is handed to a node
whose lease has run out (a ``nodes`` row of a dead node), so the server's own cluster
code decides that the session is gone."""
from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
from sqlalchemy import create_engine, text

from agentflow.rollout import rollout
from tests.rollout.joining import attempts, query
from tests.support.fake_openai import FakeOpenAI, call, first_user, last_tool, tool_calls, turn


def _lose_sessions_of(db_url: str, worker_like: str) -> int:
    """Move the live bash sessions of matching workers onto a dead node; returns how many."""
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=5)
    engine = create_engine(db_url, connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            conn.execute(text("insert into nodes (node_id, url, version, capacity, status, host, incarnation, "
                              "started_at, heartbeat_at, lease_expires_at) values (:n, 'http://127.0.0.1:9', '', 0, "
                              "'live', 'gone-host', :n, :t, :t, :t)"), {"n": ghost, "t": past})
            return conn.execute(text("update sessions set node_id = :n where worker_id like :w and "
                                     "resource_type = 'bash' and status = 'active' and "
                                     "(node_id is null or node_id not like 'ghost-%')"),
                                {"n": ghost, "w": worker_like}).rowcount
    finally:
        engine.dispose()


def _server_answers_node_lost(srv) -> bool:
    worker = f"probe_{uuid.uuid4().hex[:6]}"
    assert srv.post("/session/create", {"worker_id": worker, "resource_type": "bash"}).json()["code"] == 0
    _lose_sessions_of(srv.db_url, worker)
    answer = srv.post("/execute", {"worker_id": worker, "action": "bash:run", "params": {"command": "true"}}).json()
    return answer.get("code") == 1003 and (answer.get("data") or {}).get("node_lost") is True


def _end_moved_sessions(srv) -> None:
    """Hand the sessions moved onto dead nodes back to the server and end them there: the
    test only pretended their node died, their processes (and workspace mounts) are here."""
    own = query(srv.db_url, "select node_id from nodes where node_id not like 'ghost-%'")
    moved = query(srv.db_url, "select worker_id, resource_type from sessions where node_id like 'ghost-%'")
    if not own or not moved:
        return
    engine = create_engine(srv.db_url, connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            conn.execute(text("update sessions set node_id = :n, status = 'active', ended_at = null, "
                              "end_reason = null, expiry_reported = 0 where node_id like 'ghost-%'"), {"n": own[0][0]})
    finally:
        engine.dispose()
    for worker, resource in moved:
        srv.post("/session/destroy", {"worker_id": worker, "resource_type": resource})


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory):
    from tests.conftest import unmount_under
    from tests.support.server import start_server

    srv = start_server(tmp_path_factory.mktemp("node"))
    try:
        if not _server_answers_node_lost(srv):
            pytest.skip("the server does not answer 1003 with data.node_lost for a session on a dead node yet")
        yield srv
    finally:
        _end_moved_sessions(srv)
        srv.stop()
        unmount_under(srv.home)


def _script(db_url: str, run_id: str, losses: int):
    """Turn 0 runs ``echo one`` (opening the bash session), turn 1 runs ``echo two`` —
    after moving the session to a dead node, for the first ``losses`` tries — and the
    answer is the last output."""
    lost = {"count": 0}
    lock = threading.Lock()

    def script(req):
        t = turn(req)
        if t == 0:
            return tool_calls(call("bash-run", {"command": "echo one"}))
        if t == 1:
            with lock:
                if lost["count"] < losses:
                    assert _lose_sessions_of(db_url, f"ro-{run_id}-%") == 1
                    lost["count"] += 1
            return tool_calls(call("bash-run", {"command": "echo two"}))
        return f"<answer>{json.loads(last_tool(req))['stdout'].strip()}</answer>"

    return script


def _config(srv, fake, tmp_path, run_id: str, **keys) -> dict:
    data = tmp_path / f"tasks-{uuid.uuid4().hex[:6]}.jsonl"
    data.write_text(json.dumps({"id": "lost", "question": "say two", "answer": "two"}) + "\n")
    return {"benchmark_name": "lost", "model_name": "fake-model", "base_url": fake.base_url, "api_key": "x",
            "data_path": str(data), "available_tools": ["bash:run"], "sandbox_server_url": srv.url,
            "database_url": srv.db_url, "output_dir": str(tmp_path / "out"), "run_id": run_id,
            "max_retries": 0, **keys}


def test_a_lost_node_is_kept_as_an_attempt_and_the_task_retried_on_a_fresh_session(cluster_node, tmp_path):
    run_id = f"lost-{uuid.uuid4().hex[:8]}"
    with FakeOpenAI(_script(cluster_node.db_url, run_id, losses=1)) as fake:
        cfg = _config(cluster_node, fake, tmp_path, run_id)
        summary = rollout(cfg, progress=False)
        asked = fake.chat_requests(first_user)
    assert summary["status"] == "success" and summary["completed"] == 1 and summary["accuracy"] == 1.0
    rows = attempts(cluster_node.db_url, cfg["run_id"])
    assert [(r[2], r[3]) for r in rows] == [(1, "infra_error"), (2, "completed")]
    lost_error = rows[0][5]
    assert lost_error.startswith("sandbox node lost on bash:run: [1003] session ") and "is gone" in lost_error
    assert rows[1][4] == rows[0][4] + "-r2"  # the retry ran as a fresh worker: new sessions, on a live node
    calls = query(cluster_node.db_url, "select a.attempt, c.turn, c.code from rollout_tool_calls c join "
                                       "rollout_attempts a on a.id = c.attempt_id where a.run_id = :r "
                                       "order by a.attempt, c.id", r=cfg["run_id"])
    assert calls == [(1, 1, 0), (1, 2, 1003), (2, 1, 0), (2, 2, 0)]  # the lost call is kept with its code
    assert asked["say two"] == 2 + 3  # the lost try stopped at once; the retry ran to its answer


def test_lost_every_time_ends_as_an_infra_error_after_max_attempts(cluster_node, tmp_path):
    run_id = f"lost-{uuid.uuid4().hex[:8]}"
    with FakeOpenAI(_script(cluster_node.db_url, run_id, losses=99)) as fake:
        cfg = _config(cluster_node, fake, tmp_path, run_id, max_attempts=2)
        summary = rollout(cfg, progress=False)
    assert summary["status"] == "error" and summary["infra_errors"] == 1 and summary["completed"] == 0
    assert summary["breakdown"] == [{"outcome": "infra_error", "reason": "node_lost", "count": 1}]
    rows = attempts(cluster_node.db_url, cfg["run_id"])
    assert [(r[2], r[3]) for r in rows] == [(1, "infra_error"), (2, "infra_error")]  # both tries kept
    assert all("sandbox node lost" in r[5] for r in rows)
