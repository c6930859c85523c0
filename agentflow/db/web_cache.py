"""The web cache: every answer of the web backend, keyed by provider and request.

Rows are written by ``web:search`` / ``web:visit`` (``cache_mode: read_write``) and read
back instead of calling the provider again, so runs are reproducible and cheap. Query it
like any table, e.g. ``SELECT provider, kind, count(*) FROM web_cache GROUP BY 1, 2``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, String, select
from sqlalchemy.exc import IntegrityError
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
    """Insert or replace the entry under ``key`` (flushes; the caller commits).

    A concurrent insert of the same key by another process is not an error: the
    other answer is kept.
    """
    now = utcnow()
    expires = now + dt.timedelta(seconds=ttl_seconds) if ttl_seconds else None
    existing = session.get(WebCacheEntry, key)
    if existing is not None:
        existing.response, existing.request, existing.created_at, existing.expires_at = response, request, now, expires
        session.flush()
        return
    try:
        with session.begin_nested():
            session.add(WebCacheEntry(key=key, provider=provider, kind=kind, request=request, response=response,
                                      created_at=now, expires_at=expires))
    except IntegrityError:
        pass
