"""Two ``agentflow rollout`` processes on one run id and one PostgreSQL database, one of
them ``kill -9``'d mid-run: the survivor takes its claims over once their lease expires,
every task ends exactly once, and the survivor ends the run with the right counts."""
from __future__ import annotations

import collections
import json
import re
import threading
import uuid
from pathlib import Path

import pytest

from agentflow.cli import main
from tests.rollout.joining import (attempts, claims, gated, holders, owner_pid, start, tag_of, wait_until,
                                   write_config)
from tests.support.fake_openai import FakeOpenAI, call, first_user, tool_calls, turn

TASKS = [{"id": f"j{i:02d}", "question": f"say v{i}", "answer": f"v{i}"} for i in range(16)]
LEASE = 2.0


def echo_once(req):
    if turn(req) == 0:
        return tool_calls(call("diag-echo", {"value": first_user(req).split()[-1]}))
    return f"<answer>{first_user(req).split()[-1]}</answer>"


def _config(tmp_path: Path, server, db_url: str, fake: FakeOpenAI, run_id: str, **keys) -> dict:
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    cfg = {"benchmark_name": "join", "model_name": "fake-model", "base_url": fake.base_url, "api_key": "x",
           "data_path": str(data), "available_tools": ["diag:echo"], "sandbox_server_url": server.url,
           "database_url": db_url, "output_dir": str(tmp_path / "out"), "run_id": run_id, "max_workers": 2,
           "max_retries": 1, "claim_lease": LEASE}
    cfg.update(keys)
    return cfg


@pytest.mark.slow
def test_two_processes_one_killed_every_task_ends_once(postgres_url, server, tmp_path, capsys):
    run_id = f"join-{uuid.uuid4().hex[:8]}"
    gate = threading.Event()
    with FakeOpenAI(gated(echo_once, gate), latency=0.2) as fake:
        cfg = _config(tmp_path, server, postgres_url, fake, run_id)
        cfg_path = write_config(tmp_path / "cfg.json", cfg)
        first = start("rollout", cfg_path, tmp_path / "home-a")
        second = None
        try:
            wait_until(lambda: first.pid in holders(postgres_url, "rollout", run_id), [first],
                       "the first process claimed tasks")
            second = start("rollout", cfg_path, tmp_path / "home-b")  # same run id and config, no --resume: joins
            wait_until(lambda: second.pid in holders(postgres_url, "rollout", run_id), [first, second],
                       "the second process joined and claimed tasks")
            # a joiner with another config is refused (the fingerprint rule holds while the run runs)
            other = write_config(tmp_path / "other.json", {**cfg, "system_prompt": "be verbose"})
            refused = start("rollout", other, tmp_path / "home-c")
            refused_out = refused.communicate(timeout=60)[0]
            gate.set()

            def first_finished_some() -> bool:
                done = [r for r in attempts(postgres_url, run_id) if r[3] == "completed"]
                return len(done) >= 4 and first.pid in holders(postgres_url, "rollout", run_id)

            wait_until(first_finished_some, [first, second], "the first process finished tasks and claimed more")
            held = {(i, s) for i, s, st, o, _ in claims(postgres_url, "rollout", run_id)
                    if st == "claimed" and owner_pid(o) == first.pid}
            gate.clear()  # the survivor waits for its model until the run has been looked at mid-way
            first.kill()  # kill -9, mid-run, with claims in flight
            first.communicate(timeout=30)
            before_takeover = attempts(postgres_url, run_id)
            assert main(["runs", "show", run_id, "--database-url", postgres_url]) == 0
            shown = capsys.readouterr().out
            gate.set()
            out = second.communicate(timeout=90)[0]
        finally:
            gate.set()
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert refused.returncode == 2, refused_out
    assert f"cannot join run '{run_id}': it is running with another configuration or dataset" in refused_out
    assert "system_prompt" in refused_out

    assert re.search(r"\n  claims +\d+ pending, \d+ claimed by [12] process\(es\), \d+ done\n", shown), shown

    assert first.returncode == -9
    assert second.returncode == 0, out
    assert f"run {run_id}: success" in out

    rows = attempts(postgres_url, run_id)
    final = collections.Counter((t, s) for t, s, _, st, _, _ in rows if st != "infra_error")
    assert sorted(final) == sorted((t["id"], 0) for t in TASKS)  # none missing ...
    assert set(final.values()) == {1}  # ... and none twice
    assert [r for r in rows if r[3] != "completed"] == []  # a killed process leaves nothing half-written

    tags = {tag_of(r[4]) for r in rows}
    assert len(tags) == 2  # two processes, two sets of sandbox worker ids
    assert len({tag_of(r[4]) for r in before_takeover}) == 2  # both had finished tasks before the kill

    ended = claims(postgres_url, "rollout", run_id)
    assert {st for _, _, st, _, _ in ended} == {"done"}
    taken_over = {(i, s) for i, s, _, o, n in ended if n >= 2}
    assert held and held <= taken_over  # the killed process's claims were taken over after their lease
    assert all(owner_pid(o) == second.pid for i, s, _, o, _ in ended if (i, s) in held)

    summary = json.loads((tmp_path / "out" / run_id / "summary.json").read_text())
    assert (summary["status"], summary["completed"], summary["failed"], summary["pending"]) == ("success", 16, 0, 0)
    assert summary["total_tasks"] == summary["total_samples"] == 16 and summary["accuracy"] == 1.0
    results = [json.loads(x) for x in (tmp_path / "out" / run_id / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [t["id"] for t in TASKS]
