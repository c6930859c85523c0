"""kill -9 of the worker running a call: the retry answers ``2004 interrupted`` and does
not run the call again; starts and request claims of dead processes are cleaned up.

A dead process is simulated where timing would make a real kill flaky: a row records
the ``owner_id`` of a child process that is then killed, which is exactly what a
killed worker leaves behind.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from agentflow.processes import owner_id
from agentflow.sandbox import Sandbox
from agentflow.sandbox.client import HTTPClientConfig, HTTPServiceClient
from tests.support.fake_openai import FakeOpenAI, call, last_tool, tool_calls, turn
from tests.support.server import start_server

SLEEP = 3.0


def _query(srv, sql: str, **params) -> list:
    engine = create_engine(srv.db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def _kill_worker_when_running(srv, endpoint: str, killed: list, after: float = 0.5) -> None:
    """SIGKILL the worker(s) once a call to ``endpoint`` is claimed and running."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _query(srv, "select 1 from requests where endpoint = :e and status = 'pending'", e=endpoint):
            time.sleep(after)
            for pid in srv.worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, time.monotonic()))
            return
        time.sleep(0.02)


def _dead_owner() -> str:
    """The owner id of a process that has died (what a killed worker leaves behind)."""
    proc = subprocess.Popen(["sleep", "60"])
    owner = owner_id(proc.pid)
    proc.kill()
    proc.wait()
    return owner


def _run_killed(srv, send) -> tuple[dict, list]:
    killed: list = []
    killer = threading.Thread(target=_kill_worker_when_running, args=(srv, "execute", killed))
    killer.start()
    try:
        result = send()
    finally:
        killer.join()
    assert killed, "the worker was never killed"
    return result, killed


def _assert_interrupted(srv, result: dict, killed: list) -> str:
    assert result["code"] == 2004, result
    rid = result["meta"]["request_id"]
    data = result["data"]
    assert data["request_id"] == rid and data["started_at"] and data["may_have_taken_effect"] is True
    assert data["outcome"] == "unknown" and "died" in data["reason"]
    assert time.monotonic() - killed[0][1] < SLEEP  # answered, not slept again
    # a second run would have left an audit row (the first one died before writing its own)
    assert _query(srv, "select code from tool_calls where request_id = :r", r=rid) == []
    assert _query(srv, "select status, http_status from requests where request_id = :r", r=rid) == \
        [("interrupted", 200)]
    return rid


@pytest.mark.slow
@pytest.mark.parametrize("client", ["HTTPServiceClient", "Sandbox"])
def test_retry_after_worker_kill_answers_2004_and_does_not_run_again(server_factory, client):
    srv = server_factory(workers=1, threads=4)
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    http = HTTPServiceClient(config=HTTPClientConfig(base_url=srv.url, timeout=60, max_retries=5))
    try:
        if client == "Sandbox":
            with Sandbox(srv.url, worker_id=worker_id, max_retries=5, timeout=60) as sb:
                result, killed = _run_killed(srv, lambda: sb.execute_sync("diag:sleep", {"seconds": SLEEP}))
        else:
            result, killed = _run_killed(srv, lambda: http.execute(worker_id, "diag:sleep", {"seconds": SLEEP}))
        rid = _assert_interrupted(srv, result, killed)

        again = http.request("POST", "/execute", {"worker_id": worker_id, "action": "diag:sleep",
                                                  "params": {"seconds": SLEEP}}, request_id=rid)
        assert again["code"] == 2004 and again["meta"]["replayed"] is True
        assert again["data"]["started_at"] == result["data"]["started_at"]
        assert http.execute(worker_id, "diag:echo", {"value": 1})["code"] == 0  # the new worker serves
    finally:
        http.close()


@pytest.mark.slow
def test_bash_side_effect_of_a_killed_call_happens_at_most_once(server_factory):
    srv = server_factory(workers=1, threads=4)
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    created = srv.post("/session/create", {"worker_id": worker_id, "resource_type": "bash"}).json()
    counter = srv.workspace_of(created["data"]["session_id"]) / "counter"  # bash runs in its workspace
    http = HTTPServiceClient(config=HTTPClientConfig(base_url=srv.url, timeout=60, max_retries=5))
    try:
        result, killed = _run_killed(srv, lambda: http.execute(
            worker_id, "bash:run", {"command": f"sleep {SLEEP:g}; echo ran >> counter"}))
        _assert_interrupted(srv, result, killed)
        time.sleep(SLEEP + 1)  # a command that outlived its worker has finished by now
        runs = counter.read_text().splitlines() if counter.exists() else []
        assert len(runs) <= 1, runs
    finally:
        http.close()


@pytest.mark.slow
def test_batch_item_cut_off_by_a_kill_is_interrupted_and_the_rest_runs(server_factory):
    srv = server_factory(workers=1, threads=4)
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    actions = [{"action": "diag:echo", "params": {"value": 0}},
               {"action": "diag:sleep", "params": {"seconds": SLEEP}},
               {"action": "diag:echo", "params": {"value": 2}}]
    killed: list = []
    killer = threading.Thread(target=_kill_worker_when_running, args=(srv, "execute/batch/item", killed, 1.0))
    killer.start()
    with HTTPServiceClient(config=HTTPClientConfig(base_url=srv.url, timeout=60, max_retries=5)) as http:
        result = http.execute_batch(worker_id, actions, stop_on_error=False)
    killer.join()
    assert killed
    codes = [r["code"] for r in result["data"]["results"]]
    assert codes == [0, 2004, 0], result
    assert result["code"] == 2004 and result["data"]["results"][0]["meta"]["replayed"] is True


def _insert_starting(srv, worker_id: str, starter: str, workspace: Path) -> str:
    session_id = f"bash_{worker_id}_001"
    now = dt.datetime.utcnow()
    workspace.mkdir(parents=True)
    _query(srv, "insert into sessions (id, worker_id, resource_type, session_name, status, temporary, config, "
                "state, workspace, created_at, last_activity, expires_at, expiry_reported) values (:id, :w, 'bash', "
                ":id, 'starting', 0, '{}', :state, :ws, :now, :now, :exp, 0)",
           id=session_id, w=worker_id, state=json.dumps({"_starter": starter}), ws=str(workspace), now=now,
           exp=now + dt.timedelta(hours=1))
    return session_id


def _session(srv, session_id: str):
    return _query(srv, "select status, end_reason from sessions where id = :i", i=session_id)[0]


def test_a_start_cut_off_by_a_dead_process_does_not_block_a_recreate(server_factory, tmp_path):
    srv = server_factory(config={"server": {"cleanup_interval": 3600}})  # the re-create alone must see it
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    stale = _insert_starting(srv, worker_id, _dead_owner(), tmp_path / "ws-stale")
    t0 = time.monotonic()
    r = srv.post("/session/create", {"worker_id": worker_id, "resource_type": "bash"}, timeout=20)
    assert time.monotonic() - t0 < 5
    body = r.json()
    assert r.status_code == 200 and body["data"]["created"] is True and body["data"]["session_id"] != stale, body
    status, reason = _session(srv, stale)
    assert status == "failed" and "cut off" in reason
    assert not (tmp_path / "ws-stale").exists()  # ended like any session: its workspace is gone


def test_a_start_of_a_live_process_is_waited_for(server_factory, tmp_path):
    srv = server_factory(config={"server": {"cleanup_interval": 0.2}})
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(["sleep", "60"])
    try:
        starting = _insert_starting(srv, worker_id, owner_id(proc.pid), tmp_path / "ws-live")
        with pytest.raises(Exception):  # noqa: B017 - still waiting for the live starter
            srv.post("/session/create", {"worker_id": worker_id, "resource_type": "bash"}, timeout=2)
        assert _session(srv, starting)[0] == "starting"  # neither the re-create nor the cleaner ended it
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10  # its starter is dead now: the cleaner ends it
    # through ``closing`` (its workspace is removed) to ``failed``: a look in between
    # sees ``closing``, which is not the end
    while _session(srv, starting)[0] in ("starting", "closing") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session(srv, starting)[0] == "failed"


def test_after_a_whole_server_kill_the_cleaner_ends_starting_sessions_at_once(server_factory, tmp_path):
    srv = server_factory(config={"server": {"cleanup_interval": 3600}})
    worker_id = f"int_{uuid.uuid4().hex[:6]}"
    srv.kill()
    stale = _insert_starting(srv, worker_id, _dead_owner(), tmp_path / "ws-crash")
    again = start_server(srv.home, config={"server": {"cleanup_interval": 3600}}, port=srv.port)
    try:
        deadline = time.monotonic() + 10  # the first cleaning round runs at start, not after the interval
        while _session(again, stale)[0] in ("starting", "closing") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _session(again, stale)[0] == "failed"
        assert not (tmp_path / "ws-crash").exists()
    finally:
        again.stop()


def _insert_pending(srv, endpoint: str, owner: str, age: float = 10.0) -> str:
    rid = uuid.uuid4().hex
    _query(srv, "insert into requests (request_id, endpoint, status, owner, created_at) "
                "values (:r, :e, 'pending', :o, :t)",
           r=rid, e=endpoint, o=owner, t=dt.datetime.utcnow() - dt.timedelta(seconds=age))
    return rid


def test_the_cleaner_ends_pending_request_claims_of_dead_owners(server_factory):
    srv = server_factory(config={"server": {"cleanup_interval": 0.3}})
    dead = _dead_owner()
    interrupted = _insert_pending(srv, "execute", dead)
    resumable = _insert_pending(srv, "execute/batch", dead)
    live = _insert_pending(srv, "execute", owner_id())  # this test process: alive
    elsewhere = _insert_pending(srv, "execute", "other-host~x~1:123:456")  # within its lease
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = dict(_query(srv, "select request_id, status from requests"))
        if rows.get(interrupted) == "interrupted" and resumable not in rows:
            break
        time.sleep(0.1)
    assert rows.get(interrupted) == "interrupted" and resumable not in rows, rows
    assert rows[live] == "pending" and rows[elsewhere] == "pending"

    r = srv.post("/execute", {"worker_id": "w", "action": "diag:noop", "params": {}},
                 headers={"X-Request-ID": interrupted})
    assert r.status_code == 200 and r.json()["code"] == 2004 and r.json()["meta"]["replayed"] is True
    assert r.json()["data"]["request_id"] == interrupted


def _sleep_then_answer(req: dict):
    if turn(req) == 0:
        return tool_calls(call("diag-sleep", {"seconds": SLEEP}))
    return f"<answer>{json.loads(last_tool(req).split(chr(10), 1)[1])['outcome']}</answer>" \
        if last_tool(req).startswith("Error 2004") else "<answer>no</answer>"


@pytest.mark.slow
def test_rollout_shows_an_interrupted_call_to_the_agent_as_a_tool_failure(server_factory, tmp_path):
    from agentflow.rollout import rollout

    srv = server_factory(workers=1, threads=4)
    data = tmp_path / "tasks.jsonl"
    data.write_text(json.dumps({"id": "k1", "question": "sleep", "answer": "unknown"}) + "\n")
    killed: list = []
    killer = threading.Thread(target=_kill_worker_when_running, args=(srv, "execute", killed))
    killer.start()
    with FakeOpenAI(_sleep_then_answer) as fake:
        summary = rollout({"benchmark_name": "test", "model_name": "fake-model", "data_path": str(data),
                           "available_tools": ["diag:sleep"], "sandbox_server_url": srv.url,
                           "database_url": srv.db_url, "output_dir": str(tmp_path / "out"),
                           "run_id": f"k-{uuid.uuid4().hex[:8]}", "max_retries": 5,
                           "base_url": fake.base_url}, progress=False)
    killer.join()
    assert killed
    assert summary["completed"] == 1 and summary["accuracy"] == 1.0, summary  # the agent read the 2004
    codes = _query(srv, "select code from rollout_tool_calls")
    assert codes == [(2004,)]
