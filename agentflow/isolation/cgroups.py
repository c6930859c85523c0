"""Per-session cgroups: memory and process count for the whole session, and a way to
kill every process a session has, wherever it forked to.

cgroup v2 (a unified hierarchy at ``/sys/fs/cgroup``) is used where the machine has it;
otherwise the v1 ``memory`` and ``pids`` controllers. The server creates a folder per
session under ``<hierarchy>/<parent>/``; a root server can always write there, a
non-root server needs the operator to delegate ``<parent>`` to its user (README).
"""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from .errors import IsolationUnavailable

__all__ = ["CgroupTree", "detect_cgroups"]

_ROOT = Path("/sys/fs/cgroup")


class CgroupTree:
    """Where session cgroups go on this machine, and how to limit and empty them."""

    def __init__(self, version: int, parents: dict[str, Path]):
        self.version = version
        self.parents = parents
        """controller ("memory", "pids", or "unified" on v2) -> the parent folder."""

    # -- one session -------------------------------------------------------------
    def paths(self, key: str) -> list[Path]:
        return [parent / key for parent in self.parents.values()]

    def procs_files(self, key: str) -> list[str]:
        """The ``cgroup.procs`` files a new process must be written into."""
        return [str(p / "cgroup.procs") for p in self.paths(key)]

    def create(self, key: str, memory_bytes: int, max_pids: int) -> None:
        for path in self.paths(key):
            path.mkdir(exist_ok=True)
        if self.version == 2:
            group = self.parents["unified"] / key
            _write(group / "memory.max", str(memory_bytes))
            _write(group / "memory.swap.max", "0", optional=True)
            _write(group / "pids.max", str(max_pids))
            return
        memory = self.parents["memory"] / key
        _write(memory / "memory.limit_in_bytes", str(memory_bytes))
        _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes), optional=True)
        _write(self.parents["pids"] / key / "pids.max", str(max_pids))

    def pids(self, key: str) -> list[int]:
        found: set[int] = set()
        for path in self.paths(key):
            try:
                found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return sorted(found)

    def kill(self, key: str, wait: float = 5.0) -> bool:
        """SIGKILL every process of the session until none is left; True when empty."""
        if self.version == 2 and (self.parents["unified"] / key / "cgroup.kill").exists():
            _write(self.parents["unified"] / key / "cgroup.kill", "1", optional=True)
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids(key)
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def remove(self, key: str) -> None:
        for path in self.paths(key):
            for _ in range(100):  # rmdir fails while the last killed task is being torn down
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)



def _write(path: Path, value: str, optional: bool = False) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError:
        if not optional:
            raise


def detect_cgroups(parent: str = "agentflow", root: Path = _ROOT) -> CgroupTree:
    """The session cgroup tree of this machine, created if needed.

    Raises:
        IsolationUnavailable: no writable memory and pids controllers.
    """
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        missing = [c for c in ("memory", "pids") if c not in controllers]
        if missing:
            raise IsolationUnavailable(f"cgroup v2 at {root} lacks the {', '.join(missing)} controller(s)")
        tree = CgroupTree(2, {"unified": root / parent})
        _make_parent(tree.parents["unified"])
        _write(root / "cgroup.subtree_control", "+memory +pids", optional=True)
        _write(tree.parents["unified"] / "cgroup.subtree_control", "+memory +pids")
        return tree
    parents = {c: root / c / parent for c in ("memory", "pids")}
    for controller, path in parents.items():
        if not (root / controller / "cgroup.procs").exists():
            raise IsolationUnavailable(f"no cgroup '{controller}' controller at {root / controller}")
        _make_parent(path)
    return CgroupTree(1, parents)


def _make_parent(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as err:
        raise IsolationUnavailable(f"cannot create the session cgroup folder {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise IsolationUnavailable(f"the session cgroup folder {path} is not writable by this user (uid "
                                   f"{os.geteuid()}): delegate it (chown) or run the server as root")
