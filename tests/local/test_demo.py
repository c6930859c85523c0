"""``agentflow demo`` end to end: offline with the local model (slow), and on another
model given by ``--base-url`` (here the scripted fake, so it runs without the model).
Afterwards the database holds the run, its audited tool calls and the QA pairs."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from agentflow.demo import DemoError, DemoOptions, run_demo
from tests.support.fake_openai import FakeOpenAI, call, first_user, tool_calls, turn

from .conftest import needs_local_model


@pytest.mark.slow
@needs_local_model
@pytest.mark.timeout(290)
def test_demo_runs_end_to_end_and_leaves_everything_in_sql(tmp_path):
    home = tmp_path / "demo-home"
    proc = subprocess.run([sys.executable, "-m", "agentflow.cli", "demo", "--home", str(home), "--tasks", "2",
                           "--seeds", "2", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=280)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for expected in ("run demo-rag-", "run demo-synth-", "Next, explore the runs with SQL", "SELECT",
                     "stopping the local model server", "stopping the sandbox server"):
        assert expected in out, out[-4000:]

    result = json.loads((home / "demo.json").read_text())
    rollout_id, synth_id = result["rollout"]["run_id"], result["synthesis"]["run_id"]
    assert Path(result["rollout"]["results_file"]).is_file()
    assert Path(result["synthesis"]["report_file"]).is_file()
    db = sqlite3.connect(result["database_path"])
    try:
        status, total = db.execute("SELECT status, total_tasks FROM rollout_runs WHERE id = ?", (rollout_id,)).fetchone()
        assert (status, total) == ("success", 2)
        # each task called rag:search, and each call has the sandbox server's audit row
        calls = db.execute(
            "SELECT c.action, t.code, t.worker_id FROM rollout_tool_calls c "
            "JOIN rollout_attempts a ON a.id = c.attempt_id JOIN tool_calls t ON t.request_id = c.request_id "
            "WHERE a.run_id = ?", (rollout_id,)).fetchall()
        assert len(calls) >= 2 and {c[0] for c in calls} == {"rag:search"}
        assert all(code == 0 for _, code, _ in calls)
        assert db.execute("SELECT count(*) FROM synthesis_runs WHERE id = ? AND status = 'success'",
                          (synth_id,)).fetchone()[0] == 1
        qa = db.execute("SELECT status, question, answer FROM synthesis_qa WHERE run_id = ?", (synth_id,)).fetchall()
        assert qa, "the synthesis stored no QA pair"
        assert all(status in ("accepted", "rejected") for status, _, _ in qa)
        # the three queries printed for the user run as they are
        for q in result["queries"]:
            db.execute(q["sql"]).fetchall()
    finally:
        db.close()
    # nothing it started is left running
    for url in (result["sandbox_url"] + "/health", result["base_url"] + "/models"):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)


def _scripted_agent():
    """Rollout: search for the question, then answer. Synthesis: search new queries, then
    submit a QA pair taken from the observations."""
    counter = iter(range(10_000))

    def script(req: dict):
        names = [t["function"]["name"] for t in req.get("tools") or []]
        if "submit_qa" in names:
            return tool_calls(call("submit_qa", {"question": "Which module of the standard library implements a heap "
                                                             "queue, as found by the searches?",
                                                 "answer": "heapq", "reasoning_steps": ["search 1", "search 2"]}))
        if "stop_branch" in names:
            return tool_calls(call("rag-search", {"query": f"heapq push pop {next(counter)}"}))
        if turn(req) == 0:
            return tool_calls(call("rag-search", {"query": first_user(req)}))
        return "<answer>128</answer>"

    return script


def test_demo_on_a_model_given_by_base_url(tmp_path):
    lines: list[str] = []
    with FakeOpenAI(_scripted_agent(), model="scripted") as fake:
        result = run_demo(DemoOptions(home=tmp_path / "home", base_url=fake.base_url, model="scripted",
                                      api_key="k", tasks=2, seeds=1, progress=False), say=lines.append)
    assert result["rollout"]["status"] == "success" and result["rollout"]["total_tool_calls"] == 2
    assert result["synthesis"]["status"] == "success"
    counts = result["counts"]
    assert counts["audited_tool_calls"] == 2 and counts["synthesis_qa"] >= 1
    assert any("model: scripted at" in line for line in lines)
    assert lines[-1] == "stopping the sandbox server"
    db = sqlite3.connect(result["database_path"])
    try:
        for q in result["queries"]:
            assert db.execute(q["sql"]).fetchall()
    finally:
        db.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(result["sandbox_url"] + "/health", timeout=5)


def test_demo_needs_a_model_name_with_base_url(tmp_path):
    with pytest.raises(DemoError, match="--model"):
        run_demo(DemoOptions(home=tmp_path, base_url="http://127.0.0.1:9/v1"))


def test_demo_rejects_an_unknown_local_model(tmp_path):
    with pytest.raises(DemoError, match="smollm2-135m"):
        run_demo(DemoOptions(home=tmp_path, local_model="gpt-5"))
