"""kill -9 of the whole sandbox server (master and workers) during a rollout, restart on
the same data dir and port, resume: no task lost, none answered twice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutRun
from tests.support.fake_openai import FakeOpenAI, call, first_user, tool_calls, turn
from tests.support.server import REPO, start_server

TASKS = [{"id": f"c{i:02d}", "question": f"say v{i}", "answer": f"v{i}"} for i in range(12)]


def echo_once(req):
    if turn(req) == 0:
        return tool_calls(call("diag-echo", {"value": first_user(req).split()[-1]}))
    return f"<answer>{first_user(req).split()[-1]}</answer>"


def attempts(db_url: str, run_id: str):
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            rows = s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id)).all()
            status = s.scalar(select(RolloutRun.status).where(RolloutRun.id == run_id))
            return [(a.task_id, a.status) for a in rows], status
    finally:
        engine.dispose()


def rollout(cfg_path: Path, home: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "AGENTFLOW_HOME": str(home)}
    env.pop("AGENTFLOW_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "agentflow.cli", "rollout", "--config", str(cfg_path),
                             "--no-progress", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_rollout_resumes_after_the_server_is_killed(tmp_path):
    srv = start_server(tmp_path / "server", workers=2, threads=8)
    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    try:
        with FakeOpenAI(echo_once, latency=0.15) as fake:
            cfg = {"benchmark_name": "crash", "model_name": "fake-model", "base_url": fake.base_url,
                   "api_key": "x", "data_path": str(data), "available_tools": ["diag:echo"],
                   "sandbox_server_url": srv.url, "database_url": srv.db_url, "output_dir": str(tmp_path / "out"),
                   "run_id": run_id, "max_workers": 2, "max_retries": 1}
            cfg_path = tmp_path / "cfg.json"
            cfg_path.write_text(json.dumps(cfg))
            proc = rollout(cfg_path, tmp_path / "home", "--run-id", run_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = [t for t, st in attempts(srv.db_url, run_id)[0] if st == "completed"]
                if len(done) >= 4:
                    break
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.05)
            srv.kill()  # master and workers, mid-run
            first_out = proc.communicate(timeout=120)[0]  # the rollout meets a dead server and ends
            before, _ = attempts(srv.db_url, run_id)
            answered = {t for t, st in before if st == "completed"}
            assert 4 <= len(answered) < len(TASKS), first_out
            asked_before = fake.chat_requests()

            srv = start_server(srv.home, port=srv.port, workers=2, threads=8)  # same data dir and port
            proc = rollout(cfg_path, tmp_path / "home", "--run-id", run_id, "--resume")
            out = proc.communicate(timeout=120)[0]
            assert proc.returncode == 0, out
            rows, status = attempts(srv.db_url, run_id)
            asked_after = fake.chat_requests()
    finally:
        srv.stop()
    assert status == "success", out
    completed = sorted(t for t, st in rows if st == "completed")
    assert completed == [t["id"] for t in TASKS]  # none lost, none answered twice
    # the first run's infrastructure failures stay as history, only for tasks it had not answered
    assert not {t for t, st in rows if st != "completed"} & answered
    for t in TASKS:  # answered before the crash: not asked again; the rest: asked on resume
        q = t["question"]
        if t["id"] in answered:
            assert asked_after[q] == asked_before[q] == 2
        else:
            assert asked_after[q] - asked_before.get(q, 0) == 2
    results = [json.loads(x) for x in (tmp_path / "out" / run_id / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [t["id"] for t in TASKS]
    assert json.loads((tmp_path / "out" / run_id / "summary.json").read_text())["accuracy"] == 1.0
