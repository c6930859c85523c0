"""A run's outcome tells the truth (issue 16): failed model calls make an ``error`` run
with the reasons on screen, fatal model errors stop it early (and it stays resumable),
each run has its own output folder with a ``latest`` link, and a killed run shows as
``interrupted`` with the command that resumes it."""
from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutRun
from agentflow.rollout import rollout
from agentflow.rollout.runner import FATAL_REPEAT
from agentflow.runfiles import HEARTBEAT_STALE_S, effective_status
from tests.rollout.conftest import echo_script
from tests.rollout.test_resume_cli import TASKS, _attempts, _start, _wait_for, echo_once
from tests.support.fake_openai import FakeOpenAI, http_error


def _not_served(req):
    return http_error(404, f"The model `{req['model']}` does not exist or you do not have access to it.")


def _write(cfg, tmp_path) -> Path:
    path = tmp_path / f"cfg-{cfg['run_id']}.json"
    path.write_text(json.dumps(cfg))
    return path


def test_unserved_model_is_an_error_stopped_early_and_resumable(make_config, tmp_path, capsys):
    with FakeOpenAI(_not_served) as fake:
        cfg = make_config(TASKS, model_name="no-such-model", base_url=fake.base_url, max_workers=1)
        code = main(["rollout", "--config", str(_write(cfg, tmp_path)), "--no-progress"])
        asked = len(fake.requests)
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"run {cfg['run_id']}: error" in out
    assert f"infra_error × LLMBadRequestError HTTP 404: {FATAL_REPEAT}" in out  # outcome × reason
    assert f"{FATAL_REPEAT} × LLMBadRequestError: the model provider rejected the request: The model " \
           f"`no-such-model` does not exist" in out  # top error messages with counts
    assert "stopped early" in out and f"agentflow rollout --run-id {cfg['run_id']} --resume" in out
    assert asked == FATAL_REPEAT  # stopped after a few identical failures, not after 12 tasks
    assert f"pending {len(TASKS) - FATAL_REPEAT}" in out
    # the endpoint now serves the model: resume runs the failed and the pending tasks
    with FakeOpenAI(echo_once) as fake:
        s = rollout({**cfg, "base_url": fake.base_url, "resume": True}, progress=False)
    assert s["status"] == "success" and s["completed"] == len(TASKS) and s["accuracy"] == 1.0


def test_wrong_api_key_prints_the_reason(make_config, tmp_path, capsys):
    with FakeOpenAI(http_error(401, "Incorrect API key provided: sk-wrong.")) as fake:
        cfg = make_config(TASKS[:2], base_url=fake.base_url, api_key="sk-wrong")
        code = main(["rollout", "--config", str(_write(cfg, tmp_path)), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "infra_error × LLMAuthError HTTP 401: 2" in out
    assert "LLMAuthError: the model provider refused the API key or model 'fake-model': Incorrect API key " \
           "provided: sk-wrong. (HTTP 401)" in out


def test_a_passing_outage_does_not_stop_the_run(make_config):
    with FakeOpenAI(http_error(500, "overloaded")) as fake:
        s = rollout(make_config(TASKS[:5], base_url=fake.base_url, max_retries=0), progress=False)
    assert s["status"] == "error" and s["infra_errors"] == 5 and s["pending"] == 0  # 5xx is not fatal
    assert s["breakdown"] == [{"outcome": "infra_error", "reason": "LLMServerError HTTP 500", "count": 5}]


def test_successful_run_shows_no_failure_lines(make_config):
    with FakeOpenAI(echo_script) as fake:
        s = rollout(make_config(TASKS[:2], base_url=fake.base_url), progress=False)
    assert s["status"] == "success" and s["top_errors"] == [] and s["error"] is None
    from agentflow.cli.rollout import format_summary
    text = format_summary(s)
    assert "outcomes" not in text and "resume" not in text


def test_two_runs_of_one_benchmark_get_two_folders_and_latest(make_config, tmp_path):
    out = tmp_path / "results"
    with FakeOpenAI(echo_script) as fake:
        first = rollout(make_config(TASKS[:1], base_url=fake.base_url, output_dir=str(out)), progress=False)
        second = rollout(make_config(TASKS[:1], base_url=fake.base_url, output_dir=str(out)), progress=False)
    a, b = out / first["run_id"], out / second["run_id"]
    assert first["run_id"] != second["run_id"]
    for folder in (a, b):
        assert {p.name for p in folder.iterdir()} == {"results.jsonl", "trajectories.jsonl", "summary.json"}
    assert Path(first["results_file"]).parent == a and Path(second["results_file"]).parent == b
    assert (out / "latest").is_symlink() and (out / "latest").resolve() == b.resolve()
    assert json.loads((out / "latest" / "summary.json").read_text())["run_id"] == second["run_id"]


def test_default_output_folders_are_git_ignored():
    from tests.support.server import REPO

    ignored = (REPO / ".gitignore").read_text().split()
    assert "rollout_results/" in ignored and "synthesis_results/" in ignored


def test_stale_heartbeat_or_dead_pid_is_interrupted():
    import datetime as dt

    now = dt.datetime(2030, 1, 1)
    run = RolloutRun(id="x", status="running", pid=os.getpid(), host=socket.gethostname(), heartbeat_at=now,
                     updated_at=now)
    assert effective_status(run, now) == "running"
    stale = now + dt.timedelta(seconds=HEARTBEAT_STALE_S + 1)
    assert effective_status(run, stale) == "running"  # its process is alive here: not stale
    run.host = "another-host"
    assert effective_status(run, stale) == "interrupted"  # elsewhere: the heartbeat decides
    assert effective_status(run, now) == "running"
    run.host, run.pid = socket.gethostname(), 2 ** 22 + 12345  # no such pid
    assert effective_status(run, now) == "interrupted"
    run.status = "success"
    assert effective_status(run, stale) == "success"


@pytest.mark.slow
def test_killed_run_shows_interrupted_with_the_resume_command(server, make_config, tmp_path, capsys):
    with FakeOpenAI(echo_once, latency=0.1) as fake:
        cfg = make_config(TASKS, max_workers=2, base_url=fake.base_url)
        proc = _start(_write(cfg, tmp_path), tmp_path / "home", "--run-id", cfg["run_id"])
        _wait_for(server.db_url, cfg["run_id"], 3, proc)
        assert main(["runs", "list", "--database-url", server.db_url]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if cfg["run_id"] in x)
        assert " running " in line  # alive: its heartbeat and pid say so
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    rows, stored = _attempts(server.db_url, cfg["run_id"])
    assert stored == "running"  # nobody could write the end of the run...
    assert main(["runs", "list", "--database-url", server.db_url]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("rollout") and cfg["run_id"] in x)
    assert " interrupted " in line and f"done {len(rows)}/{len(TASKS)}" in line  # ...but it shows as interrupted
    assert f"agentflow rollout --run-id {cfg['run_id']} --resume" in out
    assert main(["runs", "show", cfg["run_id"], "--database-url", server.db_url]) == 0
    out = capsys.readouterr().out
    assert f"run {cfg['run_id']}: interrupted" in out
    assert f"agentflow rollout --run-id {cfg['run_id']} --resume" in out
    with FakeOpenAI(echo_once) as fake:  # and the resume command finishes it
        s = rollout({**cfg, "base_url": fake.base_url, "resume": True}, progress=False)
    assert s["status"] == "success" and s["completed"] == len(TASKS)
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as session:
        run = session.get(RolloutRun, cfg["run_id"])
        assert run.pid == os.getpid() and run.heartbeat_at is not None
    engine.dispose()
