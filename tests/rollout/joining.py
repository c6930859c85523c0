"""Helpers for tests where several ``agentflow rollout`` / ``agentflow synthesize``
processes join one run: start them, read their attempts and claims, wait for progress."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from sqlalchemy import create_engine, text

from tests.support.server import REPO


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def start(command: str, cfg_path: Path, home: Path, *extra: str) -> subprocess.Popen:
    """``agentflow <command> --config cfg_path`` as its own process (its own
    AGENTFLOW_HOME; the database is the config's)."""
    env = {**os.environ, "AGENTFLOW_HOME": str(home)}
    env.pop("AGENTFLOW_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "agentflow.cli", command, "--config", str(cfg_path),
                             "--no-progress", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def query(db_url: str, sql: str, **params) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params).all()]
    except Exception:  # noqa: BLE001 - the run's tables may not exist yet
        return []
    finally:
        engine.dispose()


def attempts(db_url: str, run_id: str) -> list[tuple]:
    """``(task_id, sample_index, attempt, status, worker_id, error)`` of every attempt."""
    return query(db_url, "select task_id, sample_index, attempt, status, worker_id, error from rollout_attempts "
                         "where run_id = :r order by id", r=run_id)


def claims(db_url: str, kind: str, run_id: str) -> list[tuple]:
    """``(item, sample, status, owner, claims)`` of every work claim of a run."""
    return query(db_url, "select item, sample, status, owner, claims from work_claims "
                         "where kind = :k and run_id = :r order by position", k=kind, r=run_id)


def owner_pid(owner: str | None) -> int | None:
    """The pid in a claim owner ``<tag>@<node>:<pid>:<start>``."""
    if not owner:
        return None
    return int(owner.rsplit(":", 2)[1])


def tag_of(worker_id: str) -> str:
    """The process tag in a rollout worker id ``ro-<run>-<tag>-w<slot>[-r<try>]``."""
    parts = worker_id.split("-")
    slot = next(i for i in range(len(parts) - 1, -1, -1) if parts[i].startswith("w") and parts[i][1:].isdigit())
    return parts[slot - 1]


def wait_until(condition: Callable[[], bool], procs: list[subprocess.Popen], what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail at once if a process ends meanwhile."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process ended before {what}:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gated(script: Callable[[dict], object], gate: threading.Event, limit: float = 60.0) -> Callable[[dict], object]:
    """A model script whose replies wait until ``gate`` is set: the processes of a test
    claim their first items and then hold them, so a test can start the next process
    (and see it join) before any item ends, however slowly processes start on a busy
    machine."""

    def wrapped(req: dict):
        gate.wait(limit)
        return script(req)

    return wrapped


def holders(db_url: str, kind: str, run_id: str) -> set[int | None]:
    """Pids of the processes holding claims of a run right now."""
    return {owner_pid(o) for _, _, st, o, _ in claims(db_url, kind, run_id) if st == "claimed"}
