"""Sessions: one live session per (worker, resource), kept in the database so that
every server process sees the same ones; per-session files live in a workspace folder."""
from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import isoformat, utcnow
from ..db.rows import CompiledSelect
from ..db.models import (
    SESSION_ACTIVE,
    SESSION_CLOSING,
    SESSION_DESTROYED,
    SESSION_EXPIRED,
    SESSION_FAILED,
    SESSION_LOST,
    SESSION_STARTING,
    SandboxSession,
)
from ..tools.base import SessionFailed, SessionInfo
from .errors import ParameterError, SessionError
from .cluster import Cluster, node_lost_error
from .registry import ToolRegistry
from ..processes import owner_alive, owner_id
from .writer import GroupCommitter, Row

log = logging.getLogger(__name__)

_LIVE = (SESSION_STARTING, SESSION_ACTIVE)
_TABLE = SandboxSession.__table__
_TOUCH = update(_TABLE).where(_TABLE.c.id == bindparam("b_id"), _TABLE.c.status == SESSION_ACTIVE).values(
    last_activity=bindparam("b_now"), expires_at=bindparam("b_expires"))
_TOUCH_STATE = _TOUCH.values(state=bindparam("b_state"))
# the worker's newest session on a resource: read by every call that needs a session
_NEWEST = select(_TABLE).where(_TABLE.c.worker_id == bindparam("b_worker"),
                               _TABLE.c.resource_type == bindparam("b_resource")) \
    .order_by(_TABLE.c.created_at.desc()).limit(1)
_STALE_START_SECONDS = 180.0
"""A start whose process cannot be checked (another node) is given up after this."""
_STARTER = "_starter"
"""Key in a starting row's ``state``: ``owner_id()`` of the process starting it, so a
start cut off by a dead process is failed at once. Never shown to backends."""
_STALE_CLOSE_SECONDS = 120.0
_END_DELAY = 0.05
"""Seconds a pooled temporary session is ended after its call, leaving the CPU to the
call's answer first."""

# Names that become part of a session id, hence of a folder name: no "/", no leading
# "." (so never "." or ".."), no NUL, control characters or whitespace.
NAME_CHARS = "letters, digits and . _ : @ - (not starting with . - : or @)"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@-]*")
MAX_WORKER_ID = 128
MAX_RESOURCE_TYPE = 32
MAX_CUSTOM_NAME = 128
# resource (32) + worker (128) + counter and suffix stay below the 200 characters of the
# id columns and the 255 bytes of a file name
MAX_SESSION_ID = 200


class InvalidName(ParameterError):
    """A worker id, resource type, session name or session id that could steer a path (1002)."""


def name_problem(value: object, max_length: int) -> str | None:
    """What is wrong with ``value`` as a name (None: nothing)."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not 1 <= len(value) <= max_length:
        return f"must be 1-{max_length} characters, got {len(value)}"
    if NAME_PATTERN.fullmatch(value) is None:
        return f"may contain only {NAME_CHARS}, got {value[:40]!r}"
    return None


def check_name(field: str, value: object, max_length: int) -> str:
    """Return ``value`` if it is a valid name; raise InvalidName naming ``field`` if not."""
    problem = name_problem(value, max_length)
    if problem is not None:
        raise InvalidName(f"parameter '{field}': {problem}", {"param": field})
    return value


def session_view(row: SandboxSession) -> dict:
    """The public description of a session (list/create/destroy/refresh answers)."""
    return {
        "session_id": row.id,
        "session_name": row.session_name,
        "resource_type": row.resource_type,
        "status": row.status,
        "temporary": row.temporary,
        "created_at": isoformat(row.created_at),
        "last_activity": isoformat(row.last_activity),
        "expires_at": isoformat(row.expires_at),
    }


class SessionRow(SimpleNamespace):
    """The columns of one ``sessions`` row, read for a call (detached: not an ORM object)."""


class SessionManager:
    def __init__(
        self,
        read: sessionmaker[Session],
        writer: GroupCommitter,
        registry: ToolRegistry,
        workspaces: Path,
        ttl: float,
        cluster: Cluster,
    ):
        self._cluster = cluster
        self.node_id = cluster.node_id
        self._read = read
        self._newest: CompiledSelect | None = None  # compiled at the first call
        self._writer = writer
        self._registry = registry
        self._workspaces = workspaces
        self.ttl = dt.timedelta(seconds=ttl)
        self._owner = owner_id()
        self._ending: queue.Queue = queue.Queue()
        self._ender: threading.Thread | None = None
        self._ender_lock = threading.Lock()

    # -- create ------------------------------------------------------------------
    def create(self, worker_id: str, resource_type: str, config: dict | None = None,
               custom_name: str | None = None) -> tuple[dict, bool]:
        """Create the worker's session on a resource, or return the live one.

        Returns:
            (session view, created) — ``created`` is False when it already existed.
        Raises:
            ParameterError: unknown resource type.
            SessionError: the backend could not start the session.
        """
        self._check_names(worker_id, resource_type, custom_name)
        backend = self._registry.backend(resource_type)
        self._registry.ensure_ready(resource_type)
        while True:
            try:
                outcome = self._writer.write(lambda s: self._reserve(s, worker_id, resource_type, config, custom_name))
            except IntegrityError:  # another server reserved it first (PostgreSQL): look again
                continue
            kind, row = outcome
            if kind == "existing":
                return session_view(row), False
            if kind == "wait":
                row = self._wait_started(row.id)
                if row is not None:
                    return session_view(row), False
                continue
            if kind == "stale":
                self._end(row, SESSION_EXPIRED, "idle for longer than the session ttl")
                continue
            if kind == "full":
                raise self._cluster.full_error()
            break
        info = self.info(row)
        info.save_state = lambda: self._save_starting_state(row.id, info.state)
        planned = info.workspace
        planned.mkdir(parents=True, exist_ok=True)
        try:
            backend.create_session(info)
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003, never "live"
            reason = str(err) if isinstance(err, SessionFailed) else f"{type(err).__name__}: {err}"
            log.warning("session %s failed to start: %s", row.id, reason)
            self._finish_row(row.id, SESSION_FAILED, reason)
            shutil.rmtree(info.workspace, ignore_errors=True)
            if info.workspace != planned:
                shutil.rmtree(planned, ignore_errors=True)
            raise SessionError(f"session for resource '{resource_type}' failed to start: {reason}") from err
        workspace = _adopted(info, planned)
        row = self._writer.write(lambda s: self._activate(s, row.id, info.state, workspace))
        return session_view(row), True

    @staticmethod
    def _check_names(worker_id: str, resource_type: str, custom_name: str | None = None) -> None:
        check_name("worker_id", worker_id, MAX_WORKER_ID)
        check_name("resource_type", resource_type, MAX_RESOURCE_TYPE)
        if custom_name is not None:
            check_name("custom_name", custom_name, MAX_CUSTOM_NAME)

    def workspace_for(self, session_id: str) -> Path:
        """``<workspaces>/<session_id>``, refused unless it is a direct child of the
        workspace root (a check on the id and, in depth, on the resolved path)."""
        check_name("session_id", session_id, MAX_SESSION_ID)
        path = self._workspaces / session_id
        if path.resolve().parent != self._workspaces.resolve():
            raise InvalidName(f"session id {session_id!r} does not name a folder of the workspace root",
                              {"param": "session_id"})
        return path

    def _reserve(self, s: Session, worker_id, resource_type, config, custom_name):
        live = s.scalars(
            select(SandboxSession).where(
                SandboxSession.worker_id == worker_id,
                SandboxSession.resource_type == resource_type,
                SandboxSession.status.in_(_LIVE),
            )
        ).first()
        now = utcnow()
        if live is not None:
            if live.status == SESSION_STARTING:
                return "wait", live
            if live.expires_at > now:
                return "existing", live
            if not self._mine(live):  # its own node ends it (its processes are there)
                return "existing", live
            live.status = SESSION_CLOSING
            return "stale", live
        if not self._cluster.has_room(s):
            return "full", None
        count = s.scalar(
            select(func.count()).select_from(SandboxSession).where(
                SandboxSession.worker_id == worker_id, SandboxSession.resource_type == resource_type
            )
        )
        session_id = f"{resource_type}_{worker_id}_{count + 1:03d}"
        if s.get(SandboxSession, session_id) is not None:  # ids taken out of order
            session_id = f"{session_id}_{uuid.uuid4().hex[:6]}"
        row = SandboxSession(
            id=session_id,
            worker_id=worker_id,
            resource_type=resource_type,
            session_name=custom_name or session_id,
            status=SESSION_STARTING,
            temporary=False,
            config=config or {},
            state={_STARTER: self._owner},
            workspace=str(self.workspace_for(session_id)),
            created_at=now,
            last_activity=now,
            expires_at=now + self.ttl,
            expiry_reported=False,
            node_id=self.node_id,
        )
        s.add(row)
        s.flush()
        return "new", row

    def _activate(self, s: Session, session_id: str, state: dict, workspace: str | None = None) -> SandboxSession:
        row = s.get(SandboxSession, session_id)
        now = utcnow()
        row.status, row.state, row.last_activity, row.expires_at = SESSION_ACTIVE, state, now, now + self.ttl
        if workspace is not None:
            row.workspace = workspace
        return row

    def _save_starting_state(self, session_id: str, state: dict) -> None:
        """Persist a starting session's state (``SessionInfo.save_state``)."""
        saved = {**state, _STARTER: self._owner}
        self._writer.write(lambda s: s.execute(update(SandboxSession).where(
            SandboxSession.id == session_id, SandboxSession.status == SESSION_STARTING).values(state=saved)))

    def _wait_started(self, session_id: str, limit: float = 120.0) -> SandboxSession | None:
        """The session once active; None when it failed or ended, including when the
        process starting it died (the row is failed at once, so a re-create proceeds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self._read() as s:
                row = s.get(SandboxSession, session_id)
            if row is None or row.status != SESSION_STARTING:
                return row if row is not None and row.status == SESSION_ACTIVE else None
            if _starter_alive(row) is False:
                self._fail_dead_start(session_id)
                return None
            time.sleep(0.05)
        raise SessionError(f"session {session_id} is still starting after {limit:.0f} s")

    def _fail_dead_start(self, session_id: str) -> bool:
        """End a start cut off by a dead process with whatever state it saved; False
        when another process got to it first."""
        def claim(s: Session) -> SandboxSession | None:
            res = s.execute(update(SandboxSession).where(
                SandboxSession.id == session_id, SandboxSession.status == SESSION_STARTING).values(
                    status=SESSION_CLOSING))
            return s.get(SandboxSession, session_id) if res.rowcount == 1 else None

        row = self._writer.write(claim)
        if row is None:
            return False
        log.warning("session %s: the process starting it (%s) died; ending it", session_id,
                    (row.state or {}).get(_STARTER))
        self._end(row, SESSION_FAILED, "its start was cut off: the server process starting it died")
        return True

    # -- use ---------------------------------------------------------------------
    def for_call(self, worker_id: str, resource_type: str) -> SessionRow | SandboxSession | None:
        """The worker's live session on this resource, or None (the call gets a
        temporary one).

        Raises:
            SessionError: the session expired and the worker has not been told yet.
        """
        # not through the ORM: its session, identity map and loading cost more CPU than
        # the rest of a bash:run call
        engine = self._read.kw["bind"]
        if self._newest is None:
            self._newest = CompiledSelect(_NEWEST, engine)
        found = self._newest.first(engine, {"b_worker": worker_id, "b_resource": resource_type})
        if found is None:
            return None
        row = SessionRow(**found)
        if row.status in _LIVE and not self._mine(row):
            self._cluster.route(row.id, row.node_id, f"session {row.id}")
        if row.status == SESSION_STARTING:
            row = self._wait_started(row.id)
            return row
        now = utcnow()
        if row.status == SESSION_ACTIVE and row.expires_at > now:
            return row
        if row.status == SESSION_LOST and not row.expiry_reported:
            self._mark_reported(row.id)
            raise node_lost_error(row.id, self._cluster.node(row.node_id), row.node_id)
        if row.status == SESSION_ACTIVE:  # expired but not cleaned yet: clean it now
            self.expire(row.id)
            row.status = SESSION_EXPIRED
        if row.status == SESSION_EXPIRED and not row.expiry_reported:
            self._mark_reported(row.id)
            raise SessionError(
                f"session {row.id} expired at {isoformat(row.expires_at)} after being idle longer than the "
                f"session ttl ({self.ttl.total_seconds():g} s); its state is gone. Create a new session "
                "(or call again to run in a temporary one)",
                {"session_id": row.id, "expired_at": isoformat(row.expires_at)},
            )
        return None

    def _mark_reported(self, session_id: str) -> None:
        """The worker has been told its session ended: later calls run in temporary ones."""
        self._writer.write(lambda s: s.execute(
            update(SandboxSession).where(SandboxSession.id == session_id).values(expiry_reported=True)))

    def _mine(self, row: SandboxSession) -> bool:
        """Whether this node runs the session's processes (rows from before nodes were
        recorded belong to whichever node finds them)."""
        return row.node_id is None or row.node_id == self.node_id

    def temporary(self, worker_id: str, resource_type: str) -> SessionInfo:
        """Start a session that lives for one call (no database row)."""
        self._check_names(worker_id, resource_type)
        session_id = f"tmp_{resource_type}_{worker_id}_{uuid.uuid4().hex[:8]}"
        planned = self.workspace_for(session_id)
        info = SessionInfo(session_id, worker_id, resource_type, planned, {}, {}, True)
        backend = self._registry.backend(resource_type)
        if backend.pool is None:  # a pooled backend makes it only when it starts one cold
            planned.mkdir(parents=True, exist_ok=True)
        try:
            backend.create_session(info)  # a pooled backend hands over a warm session (its own workspace)
        except Exception as err:  # noqa: BLE001 - reported as 1003
            shutil.rmtree(info.workspace, ignore_errors=True)
            if info.workspace != planned:
                shutil.rmtree(planned, ignore_errors=True)
            raise SessionError(f"temporary session for '{resource_type}' failed to start: {err}") from err
        return info

    def end_temporary(self, info: SessionInfo) -> None:
        """End a temporary session. One that came from a warm pool is ended just after
        the call, by this process's ender thread, so the answer does not wait for its
        processes to be killed and its workspace removed; if this process dies first,
        the jail's ledger names it as the owner and the cleaner ends the session."""
        backend = self._registry.backends.get(info.resource_type)
        if backend is None or backend.pool is None:
            self._stop_backend(info)
            return
        with self._ender_lock:
            if self._ender is None or not self._ender.is_alive():
                self._ender = threading.Thread(target=self._end_queued, name="agentflow-session-ender", daemon=True)
                self._ender.start()
        self._ending.put((time.monotonic(), info))

    def _end_queued(self) -> None:
        while True:
            queued_at, info = self._ending.get()
            try:
                if info is None:
                    return
                # after the answer has gone out (its audit row is written meanwhile)
                time.sleep(max(0.0, queued_at + _END_DELAY - time.monotonic()))
                self._stop_backend(info)
            finally:
                self._ending.task_done()

    def close(self) -> None:
        """End the temporary sessions still queued (at shutdown)."""
        with self._ender_lock:
            ender = self._ender
        if ender is not None and ender.is_alive():
            self._ending.put((0.0, None))
            ender.join(30)

    def is_live(self, session_id: str) -> bool:
        """Whether the session's row is starting or active (its processes must stay)."""
        with self._read() as s:
            status = s.scalar(select(SandboxSession.status).where(SandboxSession.id == session_id))
        return status in _LIVE

    def info(self, row: SandboxSession) -> SessionInfo:
        state = {k: v for k, v in (row.state or {}).items() if k != _STARTER}
        return SessionInfo(row.id, row.worker_id, row.resource_type, Path(row.workspace),
                           dict(row.config or {}), state, row.temporary)

    def touch_row(self, session_id: str, state: dict | None) -> Row:
        """The write that extends the session's life (and saves its state when it
        changed), for the transaction of the call's audit row."""
        now = utcnow()
        params = {"b_id": session_id, "b_now": now, "b_expires": now + self.ttl}
        if state is None:
            return _TOUCH, params
        return _TOUCH_STATE, {**params, "b_state": state}

    def near_expiry(self, row: SandboxSession, seconds: float) -> bool:
        return row.expires_at - utcnow() < dt.timedelta(seconds=seconds)

    # -- end ---------------------------------------------------------------------
    def destroy(self, worker_id: str, resource_type: str) -> dict:
        self._registry.backend(resource_type)
        with self._read() as s:
            live = s.scalars(select(SandboxSession).where(
                SandboxSession.worker_id == worker_id, SandboxSession.resource_type == resource_type,
                SandboxSession.status == SESSION_ACTIVE)).first()
        if live is not None and not self._mine(live):
            self._cluster.route(live.id, live.node_id, f"session {live.id}")
        row = self._writer.write(lambda s: self._claim_live(s, worker_id, resource_type))
        if row is None:
            raise SessionError(f"worker '{worker_id}' has no live session on resource '{resource_type}'")
        return session_view(self._end(row, SESSION_DESTROYED, "destroyed by request"))

    def _claim_live(self, s: Session, worker_id: str, resource_type: str) -> SandboxSession | None:
        row = s.scalars(select(SandboxSession).where(
            SandboxSession.worker_id == worker_id,
            SandboxSession.resource_type == resource_type,
            SandboxSession.status == SESSION_ACTIVE,
            self._own_rows(),
        )).first()
        if row is not None:
            row.status = SESSION_CLOSING
        return row

    def expire(self, session_id: str) -> bool:
        """End an expired session if no other process has claimed it first."""
        def claim(s: Session):
            res = s.execute(update(SandboxSession).where(
                SandboxSession.id == session_id, SandboxSession.status == SESSION_ACTIVE,
                SandboxSession.expires_at <= utcnow(), self._own_rows()).values(status=SESSION_CLOSING))
            return s.get(SandboxSession, session_id) if res.rowcount == 1 else None

        row = self._writer.write(claim)
        if row is None:
            return False
        self._end(row, SESSION_EXPIRED, "idle for longer than the session ttl")
        return True

    def _end(self, row: SandboxSession, status: str, reason: str) -> SandboxSession:
        self._stop_backend(self.info(row))
        return self._finish_row(row.id, status, reason)

    def _stop_backend(self, info: SessionInfo) -> None:
        backend = self._registry.backends.get(info.resource_type)
        try:
            if backend is not None:
                backend.destroy_session(info)
        except Exception:  # noqa: BLE001 - the workspace still goes
            log.exception("destroying session %s failed", info.session_id)
        shutil.rmtree(info.workspace, ignore_errors=True)

    def _finish_row(self, session_id: str, status: str, reason: str) -> SandboxSession:
        def finish(s: Session) -> SandboxSession:
            row = s.get(SandboxSession, session_id)
            row.status, row.ended_at, row.end_reason = status, utcnow(), reason
            return row

        return self._writer.write(finish)

    # -- list / refresh ----------------------------------------------------------
    def list(self, worker_id: str) -> list[dict]:
        with self._read() as s:
            rows = s.scalars(select(SandboxSession).where(
                SandboxSession.worker_id == worker_id, SandboxSession.status == SESSION_ACTIVE,
                SandboxSession.expires_at > utcnow()).order_by(SandboxSession.created_at)).all()
        return [session_view(r) for r in rows]

    def refresh(self, worker_id: str, resource_type: str | None = None) -> list[dict]:
        if resource_type is not None:
            self._registry.backend(resource_type)

        def extend(s: Session) -> list[SandboxSession]:
            now = utcnow()
            q = select(SandboxSession).where(SandboxSession.worker_id == worker_id,
                                             SandboxSession.status == SESSION_ACTIVE,
                                             SandboxSession.expires_at > now)
            if resource_type is not None:
                q = q.where(SandboxSession.resource_type == resource_type)
            rows = s.scalars(q).all()
            for row in rows:
                row.last_activity, row.expires_at = now, now + self.ttl
            return rows

        rows = self._writer.write(extend)
        if resource_type is not None and not rows:
            raise SessionError(f"worker '{worker_id}' has no live session on resource '{resource_type}'")
        return [session_view(r) for r in rows]

    # -- housekeeping ------------------------------------------------------------
    def cleanup_expired(self) -> int:
        """End every expired session and repair sessions left half-started or
        half-closed by a process that died: a start whose process is dead (on this
        node) at once, others after a lease. Safe to run in every process at once."""
        now = utcnow()
        mine = self._own_rows()
        with self._read() as s:
            expired = s.scalars(select(SandboxSession.id).where(
                SandboxSession.status == SESSION_ACTIVE, SandboxSession.expires_at <= now, mine)).all()
            starting = s.scalars(select(SandboxSession).where(SandboxSession.status == SESSION_STARTING,
                                                              mine)).all()
            stale = s.scalars(select(SandboxSession).where(mine).where(
                (SandboxSession.status == SESSION_STARTING)
                & (SandboxSession.last_activity < now - dt.timedelta(seconds=_STALE_START_SECONDS))
                | (SandboxSession.status == SESSION_CLOSING)
                & (SandboxSession.last_activity < now - dt.timedelta(seconds=_STALE_CLOSE_SECONDS))
                & (SandboxSession.expires_at < now - dt.timedelta(seconds=_STALE_CLOSE_SECONDS)))).all()
        ended = sum(1 for sid in expired if self.expire(sid))
        dead = [row.id for row in starting if _starter_alive(row) is False]
        ended += sum(1 for sid in dead if self._fail_dead_start(sid))
        for row in stale:
            if row.id not in dead:
                self._end(row, SESSION_FAILED, f"left {row.status} by a server process that stopped")
                ended += 1
        return ended

    def _own_rows(self):
        """The SQL condition for sessions whose processes run on this node."""
        return SandboxSession.node_id.is_(None) | (SandboxSession.node_id == self.node_id)

    def end_all(self, reason: str) -> int:
        """End every live session of this node (server shutdown with cleanup)."""
        def claim_all(s: Session) -> list[SandboxSession]:
            rows = s.scalars(select(SandboxSession).where(SandboxSession.status == SESSION_ACTIVE,
                                                          self._own_rows())).all()
            for row in rows:
                row.status = SESSION_CLOSING
            return rows

        rows = self._writer.write(claim_all)
        for row in rows:
            self._end(row, SESSION_DESTROYED, reason)
        for backend in self._registry.backends.values():
            if backend.pool is not None:
                backend.pool.drain(everyone=True)  # the node's warm sessions, not in use by anyone
        return len(rows)


def _adopted(info: SessionInfo, planned: Path) -> str | None:
    """The workspace to record when the backend handed the session a pooled one (its
    own folder of the workspace root) instead of ``planned``, which then goes."""
    if Path(info.workspace) == planned:
        return None
    try:
        planned.rmdir()
    except OSError:
        shutil.rmtree(planned, ignore_errors=True)
    return str(info.workspace)


def _starter_alive(row: SandboxSession) -> bool | None:
    """Whether the process starting ``row`` lives: None when unknown (another node,
    or a row written before starters were recorded)."""
    starter = (row.state or {}).get(_STARTER)
    return owner_alive(starter) if isinstance(starter, str) else None
