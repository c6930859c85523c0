"""A node-local warm pool of pre-started confined sessions, shared by every server process.

A backend that wants its sessions fast (``bash``, ``code``…) gives the pool a *starter*
— the function that brings a session up from nothing (jail, supervisor, and for
``code`` a kernel with its startup code run) — and ``pool_size``. Each server process
runs a refill thread; all of them together keep at most ``pool_size`` entries per
resource on the node, ready or starting. ``take`` hands a ready entry to a new session
(temporary or not), which then *is* that entry: its jail, uid, workspace and
supervisor. Entries are used once and never returned: ending the session ends the jail.

Cross-process hand-out: every entry is a file in ``<control>/pool/<resource>/`` — a
folder only the server can enter (see :func:`.session.control_dir`): ``<id>.starting``
(its content: the owner id of the process starting it) while the jail comes up, then
``<id>.ready`` (what adopting it needs). Every change to these files happens under one
``flock`` on ``<folder>/lock``, taken with a fresh open file each time (so threads of one
process exclude each other too, and a process that dies releases it): a ready entry is
adopted by rewriting its jail's ledger under the new session's identity and unlinking
the ready file before the lock is released, so no two processes can ever take the same
entry. Under the same lock the refill counts entries and reaps those whose starter died:
a start cut off half-way, and ready entries of a process that is gone (a server restarted
on new config must not hand out jails built on the old one). The jail ledger marks an
entry still in the pool (``"pool"``), so :func:`.session.sweep` leaves it to this module.

What a session could do about it: nothing it runs can see the control folder, the pool
files or another jail (each entry has its own namespaces, uid, cgroup and workspace, made
before any session used it), so a session cannot pre-poison an entry nor reach one; an
entry is started by the server with the backend's own configuration only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from ..processes import owner_alive, owner_id
from .session import Confinement, JailRecord, _unmount, _write_ledger, control_dir, session_key

log = logging.getLogger(__name__)

__all__ = ["SessionPool"]

_REFILL_INTERVAL = 1.0  # seconds between checks when nothing wakes the refill thread
_DRAIN_WAIT = 15.0  # seconds a stopping process waits for the entry it is starting
_REFILL_DELAY = 0.25  # after a take: the call that took the entry runs first, not beside a new jail
_BACKOFF = (2.0, 5.0, 15.0, 30.0)  # after failed starts, so a broken machine is not hammered


class SessionPool:
    """Pre-started sessions of one backend on this node.

    Args:
        confinement: the backend's confinement (what ends an entry).
        resource: the backend's name (the pool's folder).
        size: how many entries the node keeps (> 0).
        workspace_root: the server's workspace root (entries' workspaces go there).
        starter: brings a session up from nothing for a ``SessionInfo`` (raises on failure).
    """

    def __init__(self, confinement: Confinement, resource: str, size: int, workspace_root: Path,
                 starter: Callable):
        self.confinement = confinement
        self.resource = resource
        self.size = size
        self.root = Path(workspace_root)
        self.starter = starter
        self._owner = owner_id()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    # -- files -------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        path = control_dir(self.root) / "pool" / self.resource
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _locked(self):
        return _locked(self.folder)

    def _entries(self, suffix: str) -> list[Path]:
        return sorted(self.folder.glob(f"*.{suffix}"), key=lambda p: p.name)

    def ready_count(self) -> int:
        return len(self._entries("ready"))

    # -- hand-out ------------------------------------------------------------------
    def take(self, session) -> bool:
        """Make ``session`` the owner of a ready entry: its workspace and jail state
        become the session's. False when none is ready (the caller starts one cold)."""
        # No round trip to check the entry: the refill thread ends entries whose jail died
        # while pooled (see _reap), and a supervisor gone since is restarted by the call.
        return self._claim(session) is not None

    def _claim(self, session) -> str | None:
        self._wake.set()  # this process refills what is taken
        with self._locked():
            for path in self._entries("ready"):
                try:
                    entry = json.loads(path.read_text())
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
                    continue
                record = JailRecord.from_state(entry.get("jail"))
                if record is None:
                    path.unlink(missing_ok=True)
                    continue
                record.holder = record.holder or entry["id"]
                planned = session.workspace
                session.workspace = Path(entry["workspace"])
                session.state["jail"] = dataclasses.asdict(record)
                try:
                    # the ledger names the new owner before the entry leaves the pool
                    _write_ledger(control_dir(self.root), session, record)
                except OSError as err:  # the entry stays in the pool as it was; start cold
                    log.warning("could not hand out pooled %s session %s: %s", self.resource, entry["id"], err)
                    session.workspace = planned
                    session.state.pop("jail", None)
                    return None
                path.unlink()
                return entry["id"]
        return None

    # -- refill ----------------------------------------------------------------------
    def start(self) -> None:
        """Start this process's refill thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"agentflow-pool-{self.resource}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            wait = _REFILL_INTERVAL
            try:
                self._reap()
                while not self._stopped.is_set() and self.fill_one():
                    pass
                if self._failures:
                    wait = _BACKOFF[min(self._failures, len(_BACKOFF)) - 1]
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("refilling the %s pool failed", self.resource)
                wait = _BACKOFF[-1]
            if self._wake.wait(wait):
                self._wake.clear()
                self._stopped.wait(_REFILL_DELAY)

    def fill_one(self) -> bool:
        """Start one entry if the node has fewer than ``size``; True when one was added."""
        from ..tools.base import SessionInfo

        with self._locked():
            if self._stopped.is_set() or len(self._entries("starting")) + len(self._entries("ready")) >= self.size:
                return False
            eid = f"pool_{self.resource}_{uuid.uuid4().hex[:16]}"
            marker = self.folder / f"{eid}.starting"
            marker.write_text(self._owner)
        info = SessionInfo(eid, "", self.resource, self.root / eid, {}, {}, True)
        info.pooled = f"{self.resource}/{eid}"  # the ledger's mark: still in this pool
        try:
            info.workspace.mkdir(mode=0o700)
            self.starter(info)
        except Exception as err:  # noqa: BLE001 - logged; the pool retries later
            self._failures += 1
            log.warning("a pooled %s session did not start: %s", self.resource, err)
            self._end(info)
            with self._locked():
                marker.unlink(missing_ok=True)
            return False
        self._failures = 0
        entry = {"id": eid, "workspace": str(info.workspace), "jail": info.state.get("jail"), "owner": self._owner,
                 "created": time.time()}
        with self._locked():
            if self._stopped.is_set() or not marker.exists():  # stopping, or reaped meanwhile
                keep = False
            else:
                tmp = self.folder / f".{eid}.tmp"
                tmp.write_text(json.dumps(entry))
                os.replace(tmp, self.folder / f"{eid}.ready")
                marker.unlink()
                keep = True
        if not keep:
            self._end(info)
        return keep

    # -- ending entries ----------------------------------------------------------------
    def _reap(self) -> int:
        """End entries whose starter is gone: half-started ones and ready ones."""
        doomed = []
        with self._locked():
            for path in self._entries("starting"):
                if owner_alive(_read(path)) is False:
                    path.unlink(missing_ok=True)
                    doomed.append(path.name.rsplit(".", 1)[0])
            for path in self._entries("ready"):
                try:
                    entry = json.loads(path.read_text())
                except (OSError, ValueError):
                    entry = {}
                if not entry or owner_alive(str(entry.get("owner"))) is False or not _jail_alive(entry):
                    path.unlink(missing_ok=True)
                    doomed.append(path.name.rsplit(".", 1)[0])
        for eid in doomed:
            self._end_by_id(eid)
        return len(doomed)

    def drain(self, everyone: bool = False) -> int:
        """End the ready entries this process started (``everyone``: all of them, and
        every half-start whose process is gone) — at shutdown."""
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_DRAIN_WAIT)  # an entry being started is ended by its starter, not left half-made
        doomed = []
        with contextlib.suppress(OSError), self._locked():
            for path in self._entries("ready"):
                try:
                    owner = json.loads(path.read_text()).get("owner")
                except (OSError, ValueError):
                    owner = None
                if everyone or owner == self._owner:
                    path.unlink(missing_ok=True)
                    doomed.append(path.name.rsplit(".", 1)[0])
            if everyone:
                for path in self._entries("starting"):
                    if owner_alive(_read(path)) is not True:
                        path.unlink(missing_ok=True)
                        doomed.append(path.name.rsplit(".", 1)[0])
        for eid in doomed:
            self._end_by_id(eid)
        return len(doomed)

    def _end_by_id(self, eid: str) -> None:
        from ..tools.base import SessionInfo

        ledger = control_dir(self.root) / f"{session_key(eid)}.json"
        try:
            state = {"jail": json.loads(ledger.read_text())["jail"]}
        except (OSError, ValueError, KeyError):
            state = {}
        self._end(SessionInfo(eid, "", self.resource, self.root / eid, {}, state, True))

    def _end(self, info) -> None:
        try:
            self.confinement.stop(info)
        except Exception:  # noqa: BLE001 - the workspace still goes
            log.exception("ending pooled %s session %s failed", self.resource, info.session_id)
        if os.path.ismount(info.workspace):  # a start cut off before its jail record was saved
            _unmount(Path(info.workspace))
        shutil.rmtree(info.workspace, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path):
    """The pool folder's lock (a fresh open file each time: threads exclude each other too)."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sweep_entry(confinement: Confinement, workspace_root: Path, ledger: Path) -> bool:
    """For :func:`.session.sweep`: end the pool entry whose jail ledger is ``ledger`` if
    its starter is gone (also when its backend runs no pool any more, e.g. after a restart
    with ``pool_size: 0``). Under the pool's lock, so an entry being handed out is never
    ended. True when it was ended."""
    from ..tools.base import SessionInfo

    try:
        mark = str(json.loads(ledger.read_text())["pool"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    resource, _, eid = mark.partition("/")
    folder = control_dir(workspace_root) / "pool" / resource
    if not eid or "/" in eid or not folder.is_dir():
        return False
    with _locked(folder):
        try:
            entry = json.loads(ledger.read_text())
        except (OSError, ValueError):
            return False
        if entry.get("pool") != mark:  # handed out meanwhile: a session's jail now
            return False
        ready, starting = folder / f"{eid}.ready", folder / f"{eid}.starting"
        if ready.exists():
            try:
                owner = str(json.loads(ready.read_text()).get("owner"))
            except (OSError, ValueError):
                owner = ""
        else:
            owner = _read(starting)
        if owner_alive(owner) is not False and (ready.exists() or starting.exists()):
            return False
        ready.unlink(missing_ok=True)
        starting.unlink(missing_ok=True)
    info = SessionInfo(eid, "", resource, Path(entry["workspace"]), {}, {"jail": entry["jail"]}, True)
    confinement.stop(info)
    shutil.rmtree(info.workspace, ignore_errors=True)
    return True


def _jail_alive(entry: dict) -> bool:
    """Whether the entry's jail still runs (its first process: bwrap, or the
    supervisor when unconfined), e.g. not killed by the machine's OOM killer."""
    record = JailRecord.from_state(entry.get("jail"))
    return bool(record and record.pid) and os.path.exists(f"/proc/{record.pid}")


def _read(path: Path) -> str:
    try:
        return path.read_text()[:500]
    except OSError:
        return ""
