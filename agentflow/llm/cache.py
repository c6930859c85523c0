"""The model-call cache: chat completions stored in SQL and served again for the same request.

Every chat completion that rollout (the agent), synthesis or a judge (``llm_judge``,
``agentflow runs rescore``) makes goes through :class:`CachedChatModel`. A call is keyed
by :func:`request_key`: the sha256 of a canonical JSON (sorted keys, no whitespace) of

* the base URL the ``openai`` client sends to (no trailing ``/``),
* the request body as sent: ``model``, ``messages``, ``tools``, ``tool_choice``,
  ``temperature``, ``max_tokens`` and every extra field (``top_p``, ``seed``, …),
* the call's *scope*: for the agent, the rollout sample index (``{"sample": 2}``), so
  the *k* samples of a task with ``n_samples: k`` are *k* different entries and sample 2
  is never served sample 1's answer; empty for synthesis and the judge, whose requests
  already differ where they should (branch number, prediction).

The request timeout is transport and never part of the key, nor is any timing: rollout
keeps tool timing (``duration_ms``, ``elapsed_ms``, …) out of the prompt (see
:func:`agentflow.rollout.agent.split_timing`), so a second run of a task sends the same
requests again. A call's position is in the key implicitly: each request holds the whole
conversation so far.

Modes (config key ``cache``, flag ``--cache``; default ``read_write``, or the
environment variable ``AGENTFLOW_MODEL_CACHE``):

``read_write``
    a stored answer is served (a *hit*: no request, $0); otherwise the model is called
    and its answer stored at once (committed before the caller sees it), so a crash or a
    resume never pays twice for an answered call.
``read_only``
    a stored answer is served; a miss raises :class:`ModelCacheMiss` naming the call
    (model, scope, conversation) instead of calling the model.
``off``
    every call goes to the model and nothing is stored.

The table (``model_cache``, see :mod:`agentflow.db.model_cache`) is shared by every run
of the database: a rerun is a new run id and is served from it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from typing import Any

from .client import ChatModel, ChatReply, ToolCallRequest, Usage
from .errors import LLMError

__all__ = ["CACHE_MODES", "CACHE_ENV", "CachedChatModel", "ModelCache", "ModelCacheMiss", "check_mode",
           "default_mode", "request_key"]

CACHE_MODES = ("read_write", "read_only", "off")
CACHE_ENV = "AGENTFLOW_MODEL_CACHE"
"""The mode of a run whose config has no ``cache`` key (default ``read_write``)."""
KEY_VERSION = 1
"""Part of every key: bump it when what goes into a key changes (old entries then miss)."""


class ModelCacheMiss(LLMError):
    """``cache: read_only`` and the cache has no answer for this call: no model call is
    made. Run with ``cache: read_write`` to make (and store) it."""

    retryable = False


def check_mode(value: Any, where: str = "") -> str:
    """``value`` as a cache mode (``read-write`` and ``readonly`` spellings accepted).

    Raises:
        ConfigError: not one of :data:`CACHE_MODES`; the message lists them.
    """
    from ..config import ConfigError

    text = str(value).strip().lower().replace("-", "_") if isinstance(value, str) else None
    text = {"readonly": "read_only", "readwrite": "read_write", "none": "off"}.get(text, text)
    if text not in CACHE_MODES:
        raise ConfigError(f"{where}'cache' must be one of {', '.join(CACHE_MODES)}, got {value!r}")
    return text


def default_mode() -> str:
    """The mode for a run that sets none: ``AGENTFLOW_MODEL_CACHE``, else ``read_write``."""
    value = os.environ.get(CACHE_ENV)
    return check_mode(value, f"environment variable {CACHE_ENV}: ") if value else "read_write"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_key(endpoint: str | None, body: dict, scope: dict | None = None) -> str:
    """The cache key of one request: sha256 (hex) of the canonical JSON of the base URL,
    the request body (without ``timeout``) and the scope."""
    request = {k: v for k, v in body.items() if k != "timeout"}
    parts = {"v": KEY_VERSION, "base_url": (endpoint or "").rstrip("/"), "request": request, "scope": scope or {}}
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def _reply_json(reply: ChatReply) -> dict:
    return {"content": reply.content, "finish_reason": reply.finish_reason, "model": reply.model,
            "request_id": reply.request_id, "reasoning": reply.reasoning,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
            "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens,
                      "total_tokens": reply.usage.total_tokens,
                      "cached_prompt_tokens": reply.usage.cached_prompt_tokens}}


def _reply_of(data: dict, *, cache_hit: bool, usage: Usage | None = None, latency_ms: float = 0.0) -> ChatReply:
    return ChatReply(content=data.get("content"),
                     tool_calls=[ToolCallRequest(id=c["id"], name=c["name"], arguments=c["arguments"])
                                 for c in data.get("tool_calls") or []],
                     usage=usage if usage is not None else Usage(**(data.get("usage") or {})),
                     finish_reason=data.get("finish_reason"), model=data.get("model"),
                     request_id=data.get("request_id"), latency_ms=latency_ms, reasoning=data.get("reasoning"),
                     cache_hit=cache_hit)


class ModelCache:
    """The ``model_cache`` table in one database, in one mode, with this process's counts.

    Args:
        sessions: A SQLAlchemy session factory on the database.
        mode: One of :data:`CACHE_MODES`.
        run_id: The run whose paid calls are stored (``model_cache.run_id``).
    """

    def __init__(self, sessions, mode: str, *, run_id: str | None = None, engine=None):
        self.sessions = sessions
        self.mode = check_mode(mode)
        self.run_id = run_id
        self._engine = engine
        self._lock = threading.Lock()
        # a store waits for its turn with the other writers of a sqlite file (woken when
        # the lock frees) instead of sleeping in SQLite's busy handler
        self._writes: Any = contextlib.nullcontext()
        if engine is not None:
            from ..db.rows import process_write_lock

            self._writes = process_write_lock(engine)
        self.counts = {"calls": 0, "hits": 0, "misses": 0, "stored": 0}

    @classmethod
    def open(cls, database_url: str, mode: str, *, run_id: str | None = None) -> "ModelCache":
        """A cache with an engine of its own (its short transactions never wait behind a
        caller's); :meth:`close` disposes of it. The schema must be current."""
        from ..db import make_engine, make_session_factory

        engine = make_engine(database_url)
        return cls(make_session_factory(engine), mode, run_id=run_id, engine=engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.counts[k] += v

    def lookup(self, key: str) -> ChatReply | None:
        from ..db.model_cache import ModelCacheEntry

        with self.sessions() as s:
            entry = s.get(ModelCacheEntry, key)
            return None if entry is None else _reply_of(entry.response, cache_hit=True)

    def store(self, key: str, *, kind: str, endpoint: str, body: dict, scope: dict | None, reply: ChatReply) -> ChatReply:
        """Store a paid reply (committed before returning). When another caller stored this
        key first (two equal requests at once), its answer is returned instead, with this
        call's usage (paid all the same), so every trajectory agrees with the stored entry."""
        from sqlalchemy.exc import IntegrityError

        from ..db.model_cache import ModelCacheEntry

        data = _reply_json(reply)
        digest = {"params": {k: v for k, v in body.items() if k not in ("model", "messages", "tools", "timeout")},
                  "scope": scope or {}, "messages": len(body.get("messages") or []),
                  "tools": len(body.get("tools") or [])}
        size = len(canonical_json(data).encode("utf-8"))
        u = reply.usage
        with self._writes, self.sessions() as s:
            s.add(ModelCacheEntry(key=key, model=str(body.get("model") or ""), base_url=endpoint, kind=kind,
                                  run_id=self.run_id, request=digest, response=data, prompt_tokens=u.prompt_tokens,
                                  completion_tokens=u.completion_tokens, cached_prompt_tokens=u.cached_prompt_tokens,
                                  size_bytes=size))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                existing = s.get(ModelCacheEntry, key)
                if existing is not None:
                    return _reply_of(existing.response, cache_hit=False, usage=reply.usage,
                                     latency_ms=reply.latency_ms)
                raise
        self._count(stored=1)
        return reply


def describe_call(model: str, endpoint: str, body: dict, scope: dict | None, key: str) -> str:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    text = last.get("content") if isinstance(last.get("content"), str) else json.dumps(last.get("content"))
    text = (text or "").replace("\n", " ")
    if len(text) > 120:
        text = text[:117] + "..."
    where = ", ".join(f"{k} {v}" for k, v in (scope or {}).items())
    return (f"model {model!r} at {endpoint}{', ' + where if where else ''}, {len(messages)} messages, "
            f"last {last.get('role', '?')}: {text!r} (key {key[:16]})")


class CachedChatModel:
    """A :class:`~agentflow.llm.ChatModel` whose calls go through a :class:`ModelCache`
    (``cache=None``: straight to the model). Same ``chat`` as the model; every other
    attribute (``model``, ``base_url``, …) is the model's.

    Args:
        model: The model.
        cache: The cache (its mode decides), or ``None``.
        kind: Who calls: ``agent``, ``judge`` or ``synthesis`` (stored with each entry).
        scope: Added to every key; see :meth:`scoped`.
    """

    def __init__(self, model: ChatModel, cache: ModelCache | None, *, kind: str = "agent",
                 scope: dict | None = None):
        self.inner = model
        self.cache = cache
        self.kind = kind
        self.scope = dict(scope or {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def mode(self) -> str:
        return self.cache.mode if self.cache is not None else "off"

    def scoped(self, **scope: Any) -> "CachedChatModel":
        """The same model and cache with ``scope`` added to every key (e.g. ``sample=2``)."""
        return CachedChatModel(self.inner, self.cache, kind=self.kind, scope={**self.scope, **scope})

    def chat(self, messages: list[dict], tools: list[dict] | None = None, tool_choice: str | dict | None = None, *,
             timeout: float | None = None, temperature: float | None = None, max_tokens: int | None = None,
             **extra: Any) -> ChatReply:
        """As :meth:`ChatModel.chat`, through the cache.

        Raises:
            ModelCacheMiss: ``read_only`` and no stored answer.
            LLMError: as :meth:`ChatModel.chat`.
        """
        body = self.inner.request_body(messages, tools, tool_choice, temperature=temperature, max_tokens=max_tokens,
                                       **extra)
        cache = self.cache
        if cache is None or cache.mode == "off":
            if cache is not None:
                cache._count(calls=1, misses=1)
            return self.inner.send(body, timeout=timeout)
        endpoint = self.inner.endpoint
        key = request_key(endpoint, body, self.scope)
        hit = cache.lookup(key)
        if hit is not None:
            cache._count(calls=1, hits=1)
            return hit
        cache._count(calls=1, misses=1)
        if cache.mode == "read_only":
            raise ModelCacheMiss("cache is read_only and holds no answer for this call: "
                                 + describe_call(self.inner.model, endpoint, body, self.scope, key)
                                 + "; no model call was made (run with cache read_write to make it)")
        reply = self.inner.send(body, timeout=timeout)
        return cache.store(key, kind=self.kind, endpoint=endpoint, body=body, scope=self.scope, reply=reply)

    def __repr__(self) -> str:
        return f"CachedChatModel({self.inner!r}, mode={self.mode!r}, scope={self.scope!r})"
