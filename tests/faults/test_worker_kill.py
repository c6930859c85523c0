"""kill -9 of the gunicorn worker that is running a batch, with the real clients.

The client sees its connection drop and retries with the same X-Request-ID; the server
finds the batch's record owned by a dead process, takes it over, replays the items that
had finished, answers ``2004 interrupted`` for the item the kill cut off (its outcome is
unknown, so it is not run again) and runs only the rest. A side-effect file written by
bash into the session's workspace (the only host folder a confined session can write)
proves that no item ran twice, and the audit table holds exactly one row per item that finished.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from agentflow.sandbox import Sandbox
from agentflow.sandbox.client import HTTPClientConfig, HTTPServiceClient

STEPS = 5
PAUSE = 0.8


def _actions(target: Path) -> list[dict]:
    """bash appends its index, then a diag pause in which the worker gets killed: so the
    kill never lands inside a bash command (whose process outlives the worker)."""
    actions = []
    for i in range(STEPS):
        actions.append({"action": "bash:run", "params": {"command": f"echo {i} >> {target.name}"}})
        actions.append({"action": "diag:sleep", "params": {"seconds": PAUSE}})
    return actions


def _kill_worker_when(srv, target: Path, lines: int, killed: list) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if target.exists() and len(target.read_text().splitlines()) >= lines:
            time.sleep(PAUSE / 3)  # inside the pause that follows the bash item
            for pid in srv.worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return
        time.sleep(0.02)


def _clients(srv, worker_id):
    def low_level(actions):
        client = HTTPServiceClient(config=HTTPClientConfig(base_url=srv.url, timeout=60, max_retries=5))
        try:
            return client.execute_batch(worker_id, actions, stop_on_error=False)
        finally:
            client.close()

    def sandbox(actions):
        with Sandbox(srv.url, worker_id=worker_id, max_retries=5, timeout=60) as sb:
            return sb.execute_batch_sync(actions, stop_on_error=False)

    return {"HTTPServiceClient": low_level, "Sandbox": sandbox}


@pytest.mark.slow
@pytest.mark.parametrize("client", ["HTTPServiceClient", "Sandbox"])
def test_batch_survives_a_killed_worker(server_factory, client):
    srv = server_factory(workers=1, threads=4)  # one worker: the one that runs the batch
    worker_id = f"kill_{uuid.uuid4().hex[:6]}"
    created = srv.post("/session/create", {"worker_id": worker_id, "resource_type": "bash"}).json()
    target = srv.workspace_of(created["data"]["session_id"]) / "log.txt"  # bash runs in its workspace
    killed: list[int] = []
    killer = threading.Thread(target=_kill_worker_when, args=(srv, target, 2, killed))
    killer.start()
    result = _clients(srv, worker_id)[client](_actions(target))
    killer.join()

    assert killed, "the worker was never killed"
    data = result["data"]
    cut = 3  # pause 1: the kill lands in it
    assert [r["code"] for r in data["results"]] == [2004 if i == cut else 0 for i in range(2 * STEPS)], result
    assert result["code"] == 2004 and data["executed"] == 2 * STEPS and data["succeeded"] == 2 * STEPS - 1
    assert target.read_text().splitlines() == [str(i) for i in range(STEPS)]  # each ran exactly once
    replayed = [r["meta"].get("replayed", False) for r in data["results"]]
    assert replayed[:3] == [True, True, True]  # bash 0, pause 0, bash 1 finished before the kill
    assert not any(replayed[4:])  # the rest ran after the retry

    rid = data["results"][0]["meta"]["request_id"].split("#")[0]
    with create_engine(srv.db_url).connect() as conn:
        rows = conn.execute(text("select batch_index, code, server_pid from tool_calls where request_id like :p "
                                 "order by batch_index"), {"p": f"{rid}#%"}).all()
    # one audit row per finished item, none twice; the cut-off item died before writing its own
    assert [r[0] for r in rows] == [i for i in range(2 * STEPS) if i != cut]
    assert all(r[1] == 0 for r in rows)
    pids = {r[2] for r in rows}
    assert len(pids) == 2 and killed[0] in pids  # before and after the kill
    assert srv.get("/health").status_code == 200
