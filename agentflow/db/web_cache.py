"""The web cache: every answer of the web backend, keyed by provider and request.

Rows are written by ``web:search`` / ``web:visit`` (``cache_mode: read_write``) and read
back instead of calling the provider again, so runs are reproducible and cheap. Query it
like any table, e.g. ``SELECT provider, kind, count(*) FROM web_cache GROUP BY 1, 2``.
"""
from __future__ import annotations

import datetime as dt
import importlib
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow

__all__ = ["WebCacheEntry", "get_entry", "put_entry"]


class WebCacheEntry(Base):
    """One cached answer. ``key`` is the sha256 of provider, kind and the normalised
    request; ``request`` keeps that normalised request readable."""

    __tablename__ = "web_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), index=True)
    """``local``, ``serper``, ``jina``, ``direct`` (plain HTTP fetch) or ``summary``."""
    kind: Mapped[str] = mapped_column(String(16))
    """``search``, ``visit`` or ``summary``."""
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    def __repr__(self) -> str:
        return f"<WebCacheEntry {self.provider}:{self.kind} {self.key[:12]}>"


def get_entry(session: Session, key: str, now: dt.datetime | None = None) -> WebCacheEntry | None:
    """The live entry under ``key`` (None when absent or expired)."""
    entry = session.scalars(select(WebCacheEntry).where(WebCacheEntry.key == key)).first()
    if entry is None:
        return None
    if entry.expires_at is not None and entry.expires_at <= (now or utcnow()):
        return None
    return entry


def put_entry(session: Session, key: str, provider: str, kind: str, request: dict, response: dict,
              ttl_seconds: float | None = None) -> None:
    """Insert or replace the entry under ``key`` (the caller commits).

    On sqlite and PostgreSQL this is one ``INSERT … ON CONFLICT DO UPDATE``, so the
    transaction never reads before it writes and concurrent writers of one key simply
    take turns; the last answer wins.
    """
    now = utcnow()
    values = dict(key=key, provider=provider, kind=kind, request=request, response=response, created_at=now,
                  expires_at=now + dt.timedelta(seconds=ttl_seconds) if ttl_seconds else None)
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
        stmt = insert(WebCacheEntry).values(**values)
        update = {k: stmt.excluded[k] for k in ("request", "response", "created_at", "expires_at")}
        session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=update))
        return
    existing = session.get(WebCacheEntry, key)
    if existing is None:
        session.add(WebCacheEntry(**values))
    else:
        for name, value in values.items():
            setattr(existing, name, value)
    session.flush()
