"""The server's engine room, without HTTP: backends, sessions, calls, audit, warmup.

One :class:`Runtime` per server process, built after the fork.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from ..config import REPO_DIR, ServerConfig
from ..db import make_engine, make_session_factory, upgrade, utcnow
from ..db.engine import PRIVATE_FILE_MODE, tighten_mode
from ..db.models import WarmupState
from ..tools.base import BackendContext
from .cluster import Cluster
from .errors import ApiError, BackendUnavailable, ParameterError
from .executor import Executor
from .registry import ToolRegistry
from .requestlog import RequestLog
from .sessions import SessionManager
from .writer import GroupCommitter

log = logging.getLogger(__name__)

__all__ = ["ApiError", "Runtime"]


def default_roots(config: ServerConfig) -> list[Path]:
    """Directories client paths may point into: configured roots and the project's and
    the installation's ``seeds/`` and ``benchmark/``.

    The data dir is not one of them: it holds the database (every caller's audited
    calls), the server log and other sessions' workspaces.
    """
    candidates = [*config.roots, config.project_dir / "seeds", config.project_dir / "benchmark",
                  REPO_DIR / "seeds", REPO_DIR / "benchmark"]
    roots: list[Path] = []
    for path in candidates:
        real = (config.project_dir / path).resolve() if not path.is_absolute() else path.resolve()
        if real not in roots:
            roots.append(real)
    return roots


def workspace_root(config: ServerConfig) -> Path:
    """The folder for session workspaces (``workspace_dir``, default ``<data_dir>/workspaces``).

    It is private to the server: a confined session is handed its own workspace by
    descriptor and never sees the folder around it.
    """
    return (config.workspace_dir or config.data_dir / "workspaces").resolve()


DATA_DIR_MODE = 0o700
"""The data dir holds the database, logs, caches and indexes: the server's alone."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir 0700, or tighten it (and the logs at its top) if looser."""
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    tighten_mode(data_dir, DATA_DIR_MODE)
    for log_file in data_dir.glob("*.log"):
        tighten_mode(log_file, PRIVATE_FILE_MODE)


def _prepare_workspace_root(root: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)


class Runtime:
    """Everything one server process needs. Raises BackendConfigError or DatabaseError
    when the configuration cannot work."""

    def __init__(self, config: ServerConfig, migrate: bool = True):
        self.config = config
        prepare_data_dir(config.data_dir)
        url = config.effective_database_url
        if migrate:
            upgrade(url, lock_dir=config.data_dir)
        self._engines = [make_engine(url), make_engine(url, immediate=True)]
        self.read = make_session_factory(self._engines[0])
        self.write = make_session_factory(self._engines[1])
        self.writer = GroupCommitter(self.write)
        workspaces = workspace_root(config)
        _prepare_workspace_root(workspaces)
        hidden = [config.data_dir, workspaces, *([config.source] if config.source else [])]
        context = BackendContext(data_dir=config.data_dir, roots=default_roots(config),
                                 session_factory=self.write, project_dir=config.project_dir,
                                 isolation=config.isolation, hidden_paths=hidden,
                                 cgroup_parent=config.cgroup_parent, workspace_root=workspaces)
        self.registry = ToolRegistry(config, context)
        self.workspaces = workspaces
        self.cluster = Cluster(config, self.read, self.writer)
        self.sessions = SessionManager(self.read, self.writer, self.registry, workspaces, config.session_ttl,
                                       self.cluster)
        self.executor = Executor(self.registry, self.sessions, self.writer,
                                 config.max_output_bytes, config.max_call_timeout, node_id=self.cluster.node_id)
        self.requests = RequestLog(self.read, self.writer, stale_after=config.max_call_timeout + 60,
                                   node_id=self.cluster.node_id, node_gone=self.cluster.is_gone)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- warmup ------------------------------------------------------------------
    def warmup(self, names: list[str] | None) -> dict:
        """Warm the named backends (all when empty); returns per-backend results."""
        names = list(names or self.registry.backends)
        unknown = [n for n in names if n not in self.registry.backends]
        if unknown:
            raise ParameterError(f"parameter 'backends': unknown or disabled backend(s) {', '.join(unknown)}; "
                                 f"enabled: {', '.join(sorted(self.registry.backends))}")
        results = {}
        for name in names:
            try:
                info = self.registry.ensure_ready(name, force=True)
                results[name] = {"success": True, "warmed_up": True, "info": info}
                self._record_warmup(name, "ready", None, info)
            except BackendUnavailable as err:
                results[name] = {"success": False, "warmed_up": False, "error": err.data.get("error")}
                self._record_warmup(name, "failed", err.data.get("error"), {})
        return results

    def _record_warmup(self, name: str, status: str, error: str | None, info: dict) -> None:
        def save(s):
            row = s.get(WarmupState, name) or WarmupState(backend=name)
            row.status, row.error, row.info, row.updated_at = status, error, info, utcnow()
            s.add(row)

        self.writer.write(save)

    def isolation_report(self) -> dict:
        """How sessions are confined: the server's mode and each confining backend's limits."""
        resources = {}
        for name, backend in self.registry.backends.items():
            if backend.unconfinable:
                resources[name] = {"isolation": "unavailable", "error": backend.unconfinable}
            elif getattr(backend, "confine", None) is not None:
                resources[name] = backend.confine.describe()
        report = {"mode": self.config.isolation, "resources": resources}
        if self.config.isolation == "none":
            report["warning"] = "sessions are not confined: session code runs as the server's user"
        return report

    def warmup_status(self) -> dict:
        with self.read() as s:
            stored = {r.backend: r for r in s.scalars(select(WarmupState)).all()}
        out = {}
        for name, backend in self.registry.backends.items():
            row = stored.get(name)
            entry = {"loaded": True, "warmed_up": backend.warmed or (row is not None and row.status == "ready")}
            if row is not None and row.status == "failed" and not backend.warmed:
                entry["error"] = row.error
            out[name] = entry
        return out

    # -- background work ---------------------------------------------------------
    def start_background(self, on_orphaned: Callable[[], None] | None = None) -> None:
        """Register the node and start the lease, cleaner and warmup threads.
        ``on_orphaned``: called when the process's parent (the server's master) dies."""
        # registered before the first request is served: sessions made here name a known node
        self.cluster.register()
        self._spawn("agentflow-node-lease", lambda: self.cluster.heartbeat(self._stop, on_orphaned))
        self._spawn("agentflow-cleaner", self._clean_loop)
        for backend in self.registry.backends.values():
            backend.start_background()  # warm pools
        if self.config.warmup_enabled:
            self._spawn("agentflow-warmup", lambda: self.warmup(self.config.warmup_resources or None))

    def _spawn(self, name: str, target) -> None:
        thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _guard(target):
        def run():
            try:
                target()
            except Exception:  # noqa: BLE001 - a background thread must log, not vanish
                log.exception("background task failed")
        return run

    def _clean_loop(self) -> None:
        # the first round runs at once: after a crash (kill -9 of the whole server)
        # the leftovers of dead processes are ended as soon as the server is back
        while True:
            self._clean_once()
            if self._stop.wait(self.config.cleanup_interval):
                return

    def _clean_once(self) -> None:
        rounds = ((self.sessions.cleanup_expired, "cleaned %d expired or abandoned session(s)", "session"),
                  (self._sweep_jails, "ended %d session sandbox(es) that no live session owned", "sandbox"),
                  (self.requests.reap_abandoned, "ended %d request claim(s) of dead server processes", "request"))
        for clean, done, what in rounds:
            try:
                ended = clean()
                if ended:
                    log.info(done, ended)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("%s cleanup failed", what)

    def _sweep_jails(self) -> int:
        from ..isolation.session import sweep

        confinement = next((b.confine for b in self.registry.backends.values()
                            if getattr(b, "confine", None) is not None), None)
        if confinement is None:
            return 0
        return sweep(confinement, self.workspaces, self.sessions.is_live)

    def close(self) -> None:
        self._stop.set()
        self.sessions.close()
        self.registry.close()
        self.writer.close()
        for engine in self._engines:
            engine.dispose()
