"""Nodes of a cluster: registration, the lease, lost nodes and where a session goes.

Every server (a *node*) registers a row in ``nodes`` when its processes start and
renews its lease :data:`RENEWALS_PER_LEASE` times per ``server.node_lease``. A session
belongs to the node that created it (``sessions.node_id``): its processes and workspace
exist only there, so a call for it that lands elsewhere is forwarded (see
``agentflow.server.forward``). A node whose lease ran out is *lost*, for good: any
node's heartbeat marks it, its sessions ``lost`` and its pending request claims
interrupted in one transaction; a node that comes back registers a new incarnation and
finds its old sessions ended.

sqlite works the same way with one node (or several on one machine): the database is
the only thing nodes share, which is why a cluster across machines needs PostgreSQL.
Lease times are compared on the nodes' own clocks (keep them NTP-synchronised).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading

from typing import Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..config import ServerConfig
from ..db import isoformat, utcnow
from ..db.models import (
    NODE_LIVE,
    NODE_LOST,
    NODE_STOPPED,
    SESSION_ACTIVE,
    SESSION_CLOSING,
    SESSION_LOST,
    SESSION_STARTING,
    Node,
    RequestRecord,
    SandboxSession,
)
from ..processes import owner_id
from ..version import __version__
from .errors import BackendUnavailable, SessionError
from .writer import GroupCommitter

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 5
_LIVE_SESSION = (SESSION_STARTING, SESSION_ACTIVE)
FORWARDED_HEADER = "X-AgentFlow-Forwarded-By"
"""Set on a request one node forwards to another (the sender's node id): the receiver
runs it and never forwards it again."""


@dataclasses.dataclass(frozen=True)
class NodeRef:
    """Where to send a call: a live node other than this one."""

    node_id: str
    url: str


class ForwardCall(Exception):
    """Raised where a request turns out to belong to another node; the server answers
    it by relaying the request there. Not an ApiError: nothing is audited here."""

    def __init__(self, node: NodeRef, what: str, session_id: str | None = None):
        super().__init__(f"{what} is on node {node.node_id}")
        self.node = node
        self.what = what
        self.session_id = session_id


class NodeLost(SessionError):
    """The session's node is gone (its lease expired): its state is lost (1003)."""


class ClusterFull(BackendUnavailable):
    """No live node has room for another session (2003, HTTP 503 with Retry-After)."""

    def __init__(self, message: str, data: dict | None = None, retry_after: int = 5):
        super().__init__(message, data)
        self.retry_after = retry_after


def node_lost_error(session_id: str, node: Node | None, node_id: str) -> NodeLost:
    since = isoformat(node.lost_at or node.lease_expires_at) if node is not None else None
    return NodeLost(
        f"session {session_id} was on node {node_id}, which is gone (its lease expired"
        f"{' at ' + since if since else ''}); the session's state is lost. Create a new session "
        "(it is placed on a live node)",
        {"session_id": session_id, "node_id": node_id, "node_lost": True, "lost_at": since})


def _gone(node: Node | None) -> bool:
    return node is None or node.status != NODE_LIVE or node.lease_expires_at < utcnow()


class Cluster:
    """This node's membership: its row in ``nodes`` and the decisions that need the others."""

    def __init__(self, config: ServerConfig, read: sessionmaker[Session], writer: GroupCommitter):
        self.node_id = config.node_name
        self.url = config.advertised_url
        self.lease = dt.timedelta(seconds=config.node_lease)
        self.capacity = config.max_sessions
        self._read = read
        self._writer = writer
        # one incarnation per server start: gunicorn workers share their master's
        master = os.environ.get("AGENTFLOW_MASTER_PID")
        self.incarnation = owner_id(int(master)) if master and master.isdigit() else owner_id()
        self._registered = False
        self._lock = threading.Lock()

    # -- membership ----------------------------------------------------------------
    def register(self) -> None:
        """Insert or renew this node's row; a row of an older incarnation (a restart,
        or this node after it was declared lost) is taken over as a fresh start."""
        def upsert(s: Session) -> str:
            now = utcnow()
            row = s.get(Node, self.node_id, with_for_update=True)
            if row is None:
                row = Node(node_id=self.node_id)
                s.add(row)
                outcome = "joined"
            elif row.incarnation == self.incarnation and row.status == NODE_LIVE:
                outcome = "renewed"
            else:
                outcome = f"started again (it was {row.status})"
            if outcome != "renewed":
                row.started_at, row.lost_at = now, None
            row.url, row.version, row.capacity, row.host = self.url, __version__, self.capacity, socket.gethostname()
            row.status, row.incarnation = NODE_LIVE, self.incarnation
            row.heartbeat_at, row.lease_expires_at = now, now + self.lease
            return outcome

        try:
            outcome = self._writer.write(upsert)
        except IntegrityError:  # another process of this node inserted the row first: lock it now
            outcome = self._writer.write(upsert)
        if not self._registered or outcome != "renewed":
            log.info("node %s at %s: %s", self.node_id, self.url, outcome)
        self._registered = True

    def renew(self) -> None:
        """Extend the lease (a cheap UPDATE); re-register when the row is not ours any
        more (another incarnation, or declared lost while this process was stalled)."""
        def extend(s: Session) -> int:
            now = utcnow()
            return s.execute(update(Node).where(
                Node.node_id == self.node_id, Node.incarnation == self.incarnation,
                Node.status == NODE_LIVE).values(heartbeat_at=now, lease_expires_at=now + self.lease)).rowcount

        if self._writer.write(extend) != 1:
            log.warning("node %s: its lease had lapsed (declared lost); registering again — sessions it had "
                        "are ended", self.node_id)
            self.register()

    def stop(self) -> None:
        """Leave the cluster (a clean shutdown): others stop placing sessions here."""
        self._writer.write(lambda s: s.execute(update(Node).where(
            Node.node_id == self.node_id, Node.incarnation == self.incarnation).values(
                status=NODE_STOPPED, lease_expires_at=utcnow())))

    def heartbeat(self, stop: threading.Event, on_orphaned: Callable[[], None] | None = None) -> None:
        """The renewal loop of one server process; also ends lost nodes.

        A process whose parent (gunicorn's master) died stops renewing at once and
        calls ``on_orphaned``: its node is going away, and other nodes must see it
        lost within the lease, not after the orphan's graceful shutdown.
        """
        period = self.lease.total_seconds() / RENEWALS_PER_LEASE
        parent = os.getppid()
        while not stop.is_set():
            if os.getppid() != parent:
                log.warning("node %s: the server's master process is gone; this process stops renewing the "
                            "node's lease", self.node_id)
                if on_orphaned is not None:
                    on_orphaned()
                return
            try:
                self.renew() if self._registered else self.register()
                self.reap_lost()
            except Exception:  # noqa: BLE001 - a database blip: try again next beat
                log.exception("node %s: heartbeat failed", self.node_id)
            stop.wait(period)

    # -- lost nodes ---------------------------------------------------------------
    def reap_lost(self) -> int:
        """Declare lost every live node whose lease expired; returns how many."""
        now = utcnow()
        with self._read() as s:
            expired = s.execute(select(Node.node_id, Node.incarnation).where(
                Node.status == NODE_LIVE, Node.lease_expires_at < now, Node.node_id != self.node_id)).all()
        return sum(1 for node_id, incarnation in expired if self._declare_lost(node_id, incarnation))

    def _declare_lost(self, node_id: str, incarnation: str) -> bool:
        from .requestlog import interrupted_answer, RESUMABLE, STATUS_INTERRUPTED, STATUS_PENDING

        reason = f"node {node_id} was lost (its lease expired)"

        def mark(s: Session) -> tuple[int, int] | None:
            now = utcnow()
            claimed = s.execute(update(Node).where(
                Node.node_id == node_id, Node.incarnation == incarnation, Node.status == NODE_LIVE,
                Node.lease_expires_at < now).values(status=NODE_LOST, lost_at=now)).rowcount
            if claimed != 1:
                return None  # renewed meanwhile, or another process got there first
            sessions = s.execute(update(SandboxSession).where(
                SandboxSession.node_id == node_id,
                SandboxSession.status.in_((SESSION_STARTING, SESSION_ACTIVE, SESSION_CLOSING))).values(
                    status=SESSION_LOST, ended_at=now, end_reason=reason, expiry_reported=False)).rowcount
            pending = s.scalars(select(RequestRecord).where(
                RequestRecord.node_id == node_id, RequestRecord.status == STATUS_PENDING)).all()
            for row in pending:
                if row.endpoint in RESUMABLE:  # harmless to run again: a retry runs it afresh
                    s.delete(row)
                    continue
                row.status, row.http_status, row.finished_at = STATUS_INTERRUPTED, 200, now
                row.response = json.dumps(interrupted_answer(row, reason), default=str)
            return sessions, len(pending)

        outcome = self._writer.write(mark)
        if outcome is None:
            return False
        log.warning("node %s is lost: its lease expired; %d session(s) marked lost, %d request claim(s) ended",
                    node_id, *outcome)
        return True

    # -- lookups -----------------------------------------------------------------------
    def node(self, node_id: str) -> Node | None:
        with self._read() as s:
            return s.get(Node, node_id)

    def is_gone(self, node_id: str) -> bool:
        """Whether ``node_id`` is lost, stopped or past its lease (it answers nothing more)."""
        return _gone(self.node(node_id))

    def route(self, session_id: str, node_id: str, what: str) -> None:
        """For a live session owned by ``node_id``: return when that is this node,
        raise ForwardCall to send the request there, or NodeLost when it is gone."""
        if node_id == self.node_id:
            return
        node = self.node(node_id)
        if _gone(node):
            raise node_lost_error(session_id, node, node_id)
        raise ForwardCall(NodeRef(node.node_id, node.url), what, session_id)

    def live_nodes(self) -> list[Node]:
        with self._read() as s:
            return list(s.scalars(select(Node).where(Node.status == NODE_LIVE, Node.lease_expires_at >= utcnow())
                                  .order_by(Node.node_id)))

    def session_counts(self) -> dict[str, int]:
        """Live sessions per node."""
        with self._read() as s:
            rows = s.execute(select(SandboxSession.node_id, func.count()).where(
                SandboxSession.status.in_(_LIVE_SESSION), SandboxSession.temporary.is_(False))
                .group_by(SandboxSession.node_id)).all()
        return {node_id: count for node_id, count in rows}

    # -- placement -------------------------------------------------------------------
    def go_home(self, worker_id: str) -> bool:
        """Raise ForwardCall when ``worker_id`` has live sessions on another live node
        (a worker's sessions stay together, so a batch runs on one node); True when
        they are here, False when it has none (or only on lost nodes)."""
        with self._read() as s:
            home = s.execute(select(SandboxSession.id, SandboxSession.node_id).where(
                SandboxSession.worker_id == worker_id, SandboxSession.status.in_(_LIVE_SESSION),
                SandboxSession.node_id.is_not(None)).limit(1)).first()
        if home is None:
            return False
        try:
            self.route(home.id, home.node_id, f"worker {worker_id}'s sessions")
        except NodeLost:
            return False
        return True

    def place(self, worker_id: str, forwarded: bool = False) -> None:
        """Where a new session of ``worker_id`` goes: return to create it here, or
        raise ForwardCall (another node) or ClusterFull.

        Next to the worker's live sessions; otherwise here while this node has room,
        else on the least-loaded live node with room. A request another node
        forwarded here was placed already and stays.
        """
        if forwarded or self.go_home(worker_id) or self.capacity == 0:
            return
        counts = self.session_counts()
        if counts.get(self.node_id, 0) < self.capacity:
            return
        self._place_elsewhere(counts)

    def _place_elsewhere(self, counts: dict[str, int]) -> None:
        room = [(counts.get(n.node_id, 0) / n.capacity if n.capacity else 0.0, n.node_id, n)
                for n in self.live_nodes()
                if n.node_id != self.node_id and (n.capacity == 0 or counts.get(n.node_id, 0) < n.capacity)]
        if not room:
            raise self.full_error(counts)
        _load, _name, node = min(room)
        raise ForwardCall(NodeRef(node.node_id, node.url), "room for a new session")

    def full_error(self, counts: dict[str, int] | None = None) -> ClusterFull:
        counts = self.session_counts() if counts is None else counts
        retry = max(1, int(self.lease.total_seconds() / RENEWALS_PER_LEASE))
        return ClusterFull(
            f"no node has room for another session: node {self.node_id} holds "
            f"{counts.get(self.node_id, 0)} of its max_sessions {self.capacity}, and every other live node is "
            f"full too; retry after {retry} s, end idle sessions, or add nodes",
            {"node_id": self.node_id, "max_sessions": self.capacity, "retry_after": retry}, retry_after=retry)

    def has_room(self, s: Session) -> bool:
        """Inside a session-creating transaction: whether this node may take one more.
        Locks this node's row, so concurrent creates on PostgreSQL count in turn."""
        if self.capacity == 0:
            return True
        s.get(Node, self.node_id, with_for_update=True)
        count = s.scalar(select(func.count()).select_from(SandboxSession).where(
            SandboxSession.node_id == self.node_id, SandboxSession.status.in_(_LIVE_SESSION)))
        return count < self.capacity
