"""Looking at confined sessions from the host, as an operator would: which processes a
session has (by its cgroup and by its uid)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def cgroup_pids(key: str) -> list[int]:
    """Processes in the session's cgroup (every controller folder that exists)."""
    found: set[int] = set()
    root = Path("/sys/fs/cgroup")  # <controller>/<parent>/<key> on v1, <parent>/<key> on v2
    for procs in [*root.glob(f"*/*/{key}/cgroup.procs"), *root.glob(f"*/{key}/cgroup.procs")]:
        try:
            found.update(int(x) for x in procs.read_text().split())
        except OSError:
            continue
    return sorted(found)


def uid_pids(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and "zombie" not in fields.get("State", ""):
            found.append(int(entry))
    return found


def session_pids(state: dict | str) -> list[int]:
    """Every process of a session, from its recorded state (``sessions.state``)."""
    if isinstance(state, str):
        state = json.loads(state)
    jail = (state or {}).get("jail") or {}
    pids = set(cgroup_pids(jail["key"])) if jail.get("key") else set()
    if jail.get("uid"):
        pids.update(uid_pids(jail["uid"]))
    return sorted(pids)


def wait_until_gone(state: dict | str, wait: float = 5.0) -> list[int]:
    """The session's processes still there after up to ``wait`` seconds (empty: none)."""
    deadline = time.monotonic() + wait
    while True:
        left = session_pids(state)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
