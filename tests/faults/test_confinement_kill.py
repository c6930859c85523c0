"""kill -9 against confined sessions: no process of a session outlives it by more than
the cleaner interval, whatever was killed — a worker in the middle of a call, or the
whole server."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path


from tests.support.jail import cgroup_pids, session_pids, wait_until_gone
from tests.support.server import start_server

CONFIG = {"server": {"cleanup_interval": 1, "session_ttl": 6},
          "resources": {"bash": {"enabled": True}, "code": {"enabled": True}}}


def _execute(srv, worker, action, params, timeout=30):
    return srv.post("/execute", {"worker_id": worker, "action": action, "params": params}, timeout=timeout).json()


def _ledger(srv) -> dict[str, dict]:
    from agentflow.isolation.session import control_dir

    control = control_dir((srv.home / "workspaces").resolve())
    return {p.stem: json.loads(p.read_text()) for p in control.glob("s*.json")}



def _worker_running(srv, key: str) -> int:
    """The gunicorn worker whose call started the jail ``key`` (its ledger owner)."""
    return int(_ledger(srv)[key]["owner"].rsplit(":", 2)[1])  # node:pid:start


def test_temporary_session_of_a_killed_worker_is_ended_by_the_cleaner(tmp_path):
    srv = start_server(tmp_path / "home", config=CONFIG)
    try:
        worker = f"tmp-{uuid.uuid4().hex[:6]}"

        def mine() -> set[str]:  # the call's jail: started for it, or a pooled one it took
            return {k for k, e in _ledger(srv).items() if e["session_id"].startswith(f"tmp_bash_{worker}_")}

        call = threading.Thread(target=lambda: _execute(srv, worker, "bash:run",
                                                        {"command": "setsid sleep 300 & sleep 60"}, 90))
        call.start()
        deadline = time.monotonic() + 20
        while not mine() and time.monotonic() < deadline:
            time.sleep(0.05)
        (key,) = mine()
        entry = _ledger(srv)[key]
        time.sleep(0.5)
        assert cgroup_pids(key), "the temporary session runs"
        os.kill(_worker_running(srv, key), signal.SIGKILL)
        call.join(60)
        assert wait_until_gone({"jail": entry["jail"]}, wait=15) == []
        deadline = time.monotonic() + 15  # the sweep ends the processes first, then the rest
        while (key in _ledger(srv) or Path(entry["workspace"]).exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.ismount(entry["workspace"]) and not Path(entry["workspace"]).exists()
        assert key not in _ledger(srv)
    finally:
        srv.stop()


def test_whole_server_killed_sessions_end_when_they_expire(tmp_path):
    home = tmp_path / "home"
    srv = start_server(home, config=CONFIG)
    states = {}
    for resource in ("bash", "code"):
        worker = f"kill-{resource}"
        created = srv.post("/session/create", {"worker_id": worker, "resource_type": resource}).json()
        assert created["code"] == 0, created
        states[resource] = srv.state_of(created["data"]["session_id"])
    assert _execute(srv, "kill-bash", "bash:run", {"command": "setsid sleep 300 & echo ok"})["code"] == 0
    srv.kill()  # master and workers at once, no cleanup
    assert all(session_pids(s) for s in states.values()), "sessions outlive a crashed server until they expire"
    srv = start_server(home, config=CONFIG, port=srv.port)
    try:
        for state in states.values():
            assert wait_until_gone(state, wait=6 + 1 + 15) == []
    finally:
        srv.stop()


def test_sessions_survive_a_restart_while_they_are_live(tmp_path):
    home = tmp_path / "home"
    config = {**CONFIG, "server": {"cleanup_interval": 1, "session_ttl": 120}}
    srv = start_server(home, config=config)
    assert srv.post("/session/create", {"worker_id": "keep", "resource_type": "bash"}).json()["code"] == 0
    assert _execute(srv, "keep", "bash:run", {"command": "echo kept > f"})["code"] == 0
    srv.kill()
    srv = start_server(home, config=config, port=srv.port)
    try:
        out = _execute(srv, "keep", "bash:run", {"command": "cat f"})
        assert out["code"] == 0 and out["data"]["stdout"] == "kept\n", out
    finally:
        srv.stop()


def test_destroyed_sessions_leave_no_zombies(tmp_path):
    srv = start_server(tmp_path / "home", config=CONFIG)
    try:
        for i in range(6):
            worker = f"z-{i}"
            assert srv.post("/session/create", {"worker_id": worker, "resource_type": "code"}).json()["code"] == 0
            assert _execute(srv, worker, "code:run", {"code": "1"})["code"] == 0
            assert srv.post("/session/destroy", {"worker_id": worker, "resource_type": "code"}).json()["code"] == 0
        time.sleep(1)
        zombies = []
        for pid in [srv.proc.pid, *srv.worker_pids()]:
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    zombies.append(child)
        assert zombies == []
    finally:
        srv.stop()
