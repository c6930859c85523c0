"""The model-call cache: every chat completion rollout, synthesis or a judge received,
keyed by the request that produced it (see :mod:`agentflow.llm.cache`).

One row per distinct request. ``key`` is the sha256 of a canonical JSON of the request
parts (base URL, model, messages, tools, tool choice, sampling parameters, seed, and the
call's scope such as the rollout sample index); timing never enters it. The table is
shared by every run of the database, so a rerun (a new run id) is served from it.
Query it like any table, e.g.
``SELECT kind, model, count(*), sum(size_bytes) FROM model_cache GROUP BY 1, 2``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["ModelCacheEntry"]


class ModelCacheEntry(Base):
    """One cached chat completion."""

    __tablename__ = "model_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """sha256 (hex) of the canonical request, see :func:`agentflow.llm.cache.request_key`."""
    model: Mapped[str] = mapped_column(String(200), index=True)
    base_url: Mapped[Optional[str]] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="")
    """Who made the call: ``agent`` (rollout), ``judge`` (llm_judge, rescoring) or ``synthesis``."""
    run_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The run that paid for the call (no foreign key: a rollout or a synthesis run)."""
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """A readable digest of the request: sampling parameters, scope, message and tool
    counts (not the messages themselves, which would make the table quadratic in turns)."""
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The reply: ``content``, ``tool_calls``, ``finish_reason``, ``model``,
    ``request_id``, ``reasoning`` and ``usage`` as the provider reported them."""
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    """Bytes of the stored ``response`` JSON."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)

    def __repr__(self) -> str:
        return f"<ModelCacheEntry {self.kind}:{self.model} {self.key[:12]}>"
