"""Shared stdio MCP servers (``shared: true``): one per node for every session.

A shared server runs in a jail of its own — the same confinement as a session's (its
own uid, cgroup, private /tmp, no network unless the resource says ``network: full``)
with its own workspace under ``<data_dir>/mcp/shared/``, which no session can see, and
no session's workspace is visible to it. It is started by the first call that needs it
(under a lock, so workers never start two) and recorded in
``<data_dir>/mcp/shared/<server>.json``, from which every worker reaches its
supervisor. It keeps running across sessions and worker restarts, is started again
when its sandbox is found dead or its config changed, and is ended when the server
stops (the gunicorn master's exit) — or by the next start of a server on the same data
dir, when the last one was killed.

Everything a shared server keeps is shared by all callers: use it for stateless
services (clocks, look-ups, public APIs), never for per-agent state.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from ...isolation import IsolationError, SupervisorError
from ..base import SessionInfo, ToolError
from .config import ServerSpec

log = logging.getLogger(__name__)

__all__ = ["SharedServers"]

_REPLY_CAP = 64 << 20


class SharedServers:
    def __init__(self, backend):
        self.backend = backend
        self._known: dict[str, SessionInfo] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        path = Path(self.backend.context.data_dir) / "mcp" / "shared"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _record(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def supervisor(self, spec: ServerSpec):
        """(the supervisor of the server's jail, its SessionInfo), starting it if needed.

        Raises:
            ToolError: its jail could not be started.
        """
        confine = self.backend.confine
        with self._lock:
            info = self._known.get(spec.name)
        if info is not None:
            return confine.attach(info, max_reply_bytes=_REPLY_CAP), info
        with open(self.root / f".{spec.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = self._load(spec)
            if info is None:
                info = self._start(spec)
        with self._lock:
            self._known[spec.name] = info
        return confine.attach(info, max_reply_bytes=_REPLY_CAP), info

    def _load(self, spec: ServerSpec) -> SessionInfo | None:
        """The recorded jail if it runs this config and answers; else None (ended)."""
        try:
            rec = json.loads(self._record(spec.name).read_text())
            info = SessionInfo(rec["session_id"], "", self.backend.name, Path(rec["workspace"]), {}, rec["state"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if rec.get("fingerprint") == spec.fingerprint():
            try:
                self.backend.confine.attach(info, max_reply_bytes=1 << 20).request("ping", 5)
                return info
            except (SupervisorError, IsolationError):
                pass
        self._end(info)
        return None

    def _start(self, spec: ServerSpec) -> SessionInfo:
        jails = self.root / "jails"
        jails.mkdir(mode=0o700, exist_ok=True)
        workspace = jails / f"{spec.name}-{uuid.uuid4().hex[:8]}"
        workspace.mkdir(mode=0o700)
        info = SessionInfo(f"mcp-shared-{workspace.name}", "", self.backend.name, workspace, {}, {})
        try:
            self.backend.confine.start(info, self.backend.jail_env(workspace), startup_timeout=spec.startup_timeout)
        except (IsolationError, OSError) as err:
            shutil.rmtree(workspace, ignore_errors=True)
            raise ToolError(f"the sandbox of shared MCP server '{spec.name}' did not start: {err}",
                            {"server": spec.name}) from None
        record = {"session_id": info.session_id, "workspace": str(workspace), "state": info.state,
                  "fingerprint": spec.fingerprint(), "pid": os.getpid()}
        tmp = self._record(spec.name).with_name(f".{spec.name}.{os.getpid()}.json")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._record(spec.name))
        log.info("shared MCP server %s: sandbox started (%s)", spec.name, info.session_id)
        return info

    def _end(self, info: SessionInfo) -> None:
        try:
            self.backend.confine.stop(info)
        except Exception:  # noqa: BLE001 - ending must go on
            log.exception("ending shared MCP sandbox %s failed", info.session_id)
        shutil.rmtree(info.workspace, ignore_errors=True)

    def forget(self, spec: ServerSpec) -> None:
        """Drop this process's view of the server (its sandbox failed): the next call
        checks the record again and restarts it if needed."""
        with self._lock:
            self._known.pop(spec.name, None)

    def close(self) -> None:
        """End every shared server of this data dir — only in the process that stops the
        node (the gunicorn master, or a server run without gunicorn), never in a worker."""
        if os.environ.get("AGENTFLOW_MASTER_PID") or self.backend.confine is None:
            return
        root = Path(self.backend.context.data_dir) / "mcp" / "shared"
        for path in root.glob("*.json") if root.is_dir() else []:
            try:
                rec = json.loads(path.read_text())
                info = SessionInfo(rec["session_id"], "", self.backend.name, Path(rec["workspace"]), {}, rec["state"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self._end(info)
            path.unlink(missing_ok=True)
