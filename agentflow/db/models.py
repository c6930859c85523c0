"""Server tables: sessions, the tool-call audit log, idempotent requests, warmup state.

The schema is a public interface (users query it with SQL); change it only through an
Alembic revision in ``migrations/versions``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

SESSION_STARTING = "starting"
SESSION_ACTIVE = "active"
SESSION_CLOSING = "closing"
SESSION_DESTROYED = "destroyed"
SESSION_EXPIRED = "expired"
SESSION_FAILED = "failed"
SESSION_LOST = "lost"
"""Its node's lease expired (the node died or was cut off): its processes are gone."""

NODE_LIVE = "live"
NODE_LOST = "lost"
NODE_STOPPED = "stopped"


class SandboxSession(Base):
    """One session of one worker on one resource type. At most one is ``starting`` or
    ``active`` per (worker_id, resource_type), enforced by a partial unique index."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(200), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    session_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=SESSION_ACTIVE)
    temporary: Mapped[bool] = mapped_column(Boolean, default=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workspace: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_activity: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    ended_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    end_reason: Mapped[Optional[str]] = mapped_column(Text)
    expiry_reported: Mapped[bool] = mapped_column(Boolean, default=False)
    node_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The node (server) that runs the session's processes; calls for it go there."""

    __table_args__ = (
        Index(
            "uq_sessions_live",
            "worker_id",
            "resource_type",
            unique=True,
            sqlite_where=text("status IN ('starting', 'active')"),
            postgresql_where=text("status IN ('starting', 'active')"),
        ),
        Index("ix_sessions_worker_resource", "worker_id", "resource_type", "created_at"),
    )

    def __repr__(self) -> str:
        return f"<SandboxSession {self.id} {self.status}>"


class ToolCall(Base):
    """The audit log: one row per executed tool call (batch items included)."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    trace_id: Mapped[str] = mapped_column(String(200), index=True)
    worker_id: Mapped[str] = mapped_column(String(200), index=True)
    session_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    temporary_session: Mapped[bool] = mapped_column(Boolean, default=False)
    resource_type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200), index=True)
    batch_index: Mapped[Optional[int]] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    code: Mapped[int] = mapped_column(Integer, index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[Optional[str]] = mapped_column(Text)
    """The ``data`` of the response as JSON text, cut at the audit cap."""
    result_size: Mapped[int] = mapped_column(Integer, default=0)
    result_sha256: Mapped[str] = mapped_column(String(64), default="")
    result_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    server_pid: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[Optional[str]] = mapped_column(String(200))
    """The node that ran the call (``meta.node_id``)."""

    def __repr__(self) -> str:
        return f"<ToolCall {self.id} {self.action} code={self.code}>"


class RequestRecord(Base):
    """Responses kept by ``X-Request-ID`` so a retried POST is answered, not rerun."""

    __tablename__ = "requests"

    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(100))
    body_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    """sha256 of the request body: the same id with another body is not a retry."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    owner: Mapped[str] = mapped_column(String(200), default="")
    """``host:pid`` of the process running the request (a dead owner means retry)."""
    http_status: Mapped[Optional[int]] = mapped_column(Integer)
    response: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    node_id: Mapped[Optional[str]] = mapped_column(String(200))
    """The node running the request: when that node is lost, the claim is interrupted."""

    def __repr__(self) -> str:
        return f"<RequestRecord {self.request_id} {self.status}>"


class WarmupState(Base):
    """Last warmup outcome of each backend, shared by all server processes."""

    __tablename__ = "warmup_state"

    backend: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[Optional[str]] = mapped_column(Text)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<WarmupState {self.backend} {self.status}>"


class Node(Base):
    """One sandbox server of a cluster, registered at start and kept alive by a lease
    its processes renew (see ``agentflow.runtime.cluster``)."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    """Where the other nodes reach this one (``server.node_url``)."""
    version: Mapped[str] = mapped_column(String(64), default="")
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    """``server.max_sessions``: live sessions it takes (0: no limit)."""
    status: Mapped[str] = mapped_column(String(16), default=NODE_LIVE)
    """``live``, ``lost`` (its lease expired) or ``stopped`` (it shut down)."""
    host: Mapped[str] = mapped_column(String(255), default="")
    incarnation: Mapped[str] = mapped_column(String(64), default="")
    """Random per start: a node back after being lost is a new incarnation."""
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    lease_expires_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    lost_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    def __repr__(self) -> str:
        return f"<Node {self.node_id} {self.status}>"
