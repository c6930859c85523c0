"""``agentflow demo`` end to end, offline: sandbox server, local model, rollout, synthesis;
afterwards the database holds the run, its audited tool calls and the QA pairs."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_local_model

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, needs_local_model]


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
    leftover = subprocess.run(["pgrep", "-f", f"agentflow-.*{home}|--home {home}"], capture_output=True, text=True)
    assert not leftover.stdout.strip()
