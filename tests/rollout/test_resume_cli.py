"""Resume after the rollout process is killed or interrupted, and the CLI commands."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from agentflow.cli import main
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutRun
from tests.support.fake_openai import FakeOpenAI, call, first_user, tool_calls, turn
from tests.support.server import REPO

TASKS = [{"id": f"k{i:02d}", "question": f"say v{i}", "answer": f"v{i}"} for i in range(12)]


def echo_once(req):
    if turn(req) == 0:
        return tool_calls(call("diag-echo", {"value": first_user(req).split()[-1]}))
    return f"<answer>{first_user(req).split()[-1]}</answer>"


def _attempts(db_url, run_id):
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        rows = s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id)
                         .options(selectinload(RolloutAttempt.messages))).all()
        status = s.scalar(select(RolloutRun.status).where(RolloutRun.id == run_id))
    engine.dispose()
    return rows, status


def _start(cfg_path: Path, home: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "AGENTFLOW_HOME": str(home)}
    env.pop("AGENTFLOW_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "agentflow.cli", "rollout", "--config", str(cfg_path),
                             "--no-progress", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(db_url, run_id, count, proc, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            rows, _ = _attempts(db_url, run_id)
        except Exception:  # the run's tables may not exist yet
            rows = []
        if len(rows) >= count:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("the rollout made no progress")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_resume_after_the_process_dies(server, make_config, tmp_path, sig):
    with FakeOpenAI(echo_once, latency=0.1) as fake:
        cfg = make_config(TASKS, max_workers=2, base_url=fake.base_url)
        cfg_path = tmp_path / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        proc = _start(cfg_path, tmp_path / "home", "--run-id", cfg["run_id"])
        _wait_for(server.db_url, cfg["run_id"], 4, proc)
        proc.send_signal(sig)
        out = proc.communicate(timeout=30)[0]
        if sig == signal.SIGINT:
            assert proc.returncode == 130, out
            assert "--resume" in out
        done_before, status = _attempts(server.db_url, cfg["run_id"])
        assert 4 <= len(done_before) < len(TASKS)  # killed mid-run
        assert status == ("cancelled" if sig == signal.SIGINT else "running")
        assert all(a.status == "completed" and len(a.messages) == 4 for a in done_before)  # nothing half-written
        asked_before = fake.chat_requests()
        proc = _start(cfg_path, tmp_path / "home", "--run-id", cfg["run_id"], "--resume", "--max-workers", "4")
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out
        assert "accuracy    1.0000" in out
        rows, status = _attempts(server.db_url, cfg["run_id"])
    assert status == "success"
    assert sorted(a.task_id for a in rows) == [t["id"] for t in TASKS]  # none lost, none run twice
    asked_after = fake.chat_requests()
    for a in done_before:  # a task answered before the kill was not asked again
        assert asked_after[a.question] == asked_before[a.question] == 2
    summary = json.loads((Path(cfg["output_dir"]) / cfg["run_id"] / "summary.json").read_text())
    assert summary["completed"] == 12 and summary["accuracy"] == 1.0


def test_cli_rollout_and_runs_commands(server, make_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGENTFLOW_DATABASE_URL", server.db_url)
    with FakeOpenAI(echo_once) as fake:
        cfg = make_config(TASKS[:3], base_url=fake.base_url, database_url=None)
        cfg.pop("database_url")
        cfg_path = tmp_path / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        assert main(["rollout", "--config", str(cfg_path), "--no-progress", "--set", "max_turns=4",
                     "--run-id", cfg["run_id"]]) == 0
    out = capsys.readouterr().out
    assert f"run {cfg['run_id']}: success" in out and "accuracy    1.0000" in out
    assert main(["runs", "list"]) == 0
    assert cfg["run_id"] in capsys.readouterr().out
    assert main(["runs", "show", cfg["run_id"]]) == 0
    assert "k01" in capsys.readouterr().out
    assert main(["runs", "show", cfg["run_id"], "--task", "k00"]) == 0
    assert json.loads(capsys.readouterr().out)["tool_calls"][0]["action"] == "diag:echo"
    export_dir = tmp_path / "again"
    assert main(["runs", "export", cfg["run_id"], "--output-dir", str(export_dir)]) == 0
    original = (Path(cfg["output_dir"]) / cfg["run_id"] / "results.jsonl").read_text()
    assert (export_dir / "results.jsonl").read_text() == original
    assert main(["runs", "show", "missing-run"]) == 2
    assert "no rollout or synthesis run 'missing-run'" in capsys.readouterr().err
    assert main(["rollout", "--config", str(cfg_path), "--set", "max_turnz=3"]) == 2
    assert "did you mean 'max_turns'" in capsys.readouterr().err
