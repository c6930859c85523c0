"""Rollout tables: runs, task attempts, messages and tool calls.

A run (``rollout_runs``) holds the spec that rebuilds it and the fingerprint resume
checks. Each try of one task sample is an attempt (``rollout_attempts``), written with its
messages (``rollout_messages``) and tool calls (``rollout_tool_calls``) in one
transaction when it finishes, so a crash never leaves half a trajectory. An attempt whose
status is ``infra_error`` is retried on resume; the new try is a new row with
``attempt + 1`` and the old one is kept.

Tool calls link to the server's audit table ``tool_calls`` by ``trace_id`` (one per
attempt) and, exactly, by ``request_id``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

RUN_RUNNING = "running"
RUN_SUCCESS = "success"
RUN_ERROR = "error"
RUN_CANCELLED = "cancelled"
RUN_INTERRUPTED = "interrupted"
"""Shown (never stored) for a ``running`` run whose process is gone: see
``agentflow.runfiles.effective_status``."""

ATTEMPT_COMPLETED = "completed"
"""The agent gave a final answer."""
ATTEMPT_MAX_TURNS = "max_turns"
"""The agent still asked for tools after ``max_turns`` model calls."""
ATTEMPT_TIMEOUT = "timeout"
"""The task ran past ``task_timeout``."""
ATTEMPT_ERROR = "error"
"""The task failed for a reason a retry will not fix (not written by the current runner,
which records every model or sandbox failure as ``infra_error``)."""
ATTEMPT_INFRA_ERROR = "infra_error"
"""The sandbox or the model endpoint failed (after retries, or refused the request: wrong
key, unknown model, 400); the run is ``error`` and the attempt is retried on resume."""


class RolloutRun(Base):
    """One rollout run of one model over one benchmark."""

    __tablename__ = "rollout_runs"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    benchmark_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING, index=True)
    """``running``, ``success`` (every task has a final attempt), ``error`` (some tasks
    failed for infrastructure reasons, or the run stopped early on fatal model errors;
    it can be resumed) or ``cancelled``. ``runs list`` shows ``interrupted`` for a
    ``running`` run whose process is gone."""
    model_name: Mapped[str] = mapped_column(String(200))
    data_path: Mapped[str] = mapped_column(Text, default="")
    fingerprint: Mapped[str] = mapped_column(String(64))
    """sha256 of the run's identity (see ``agentflow.rollout.config.fingerprint``)."""
    fingerprint_version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The config (secrets masked), the identity that was hashed, dataset checksum and
    AgentFlow version: enough to rebuild the run."""
    total_tasks: Mapped[int] = mapped_column(Integer, default=0)
    """Task samples in the run (tasks × ``n_samples``)."""
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    error: Mapped[Optional[str]] = mapped_column(Text)
    output_dir: Mapped[Optional[str]] = mapped_column(Text)
    heartbeat_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    """Updated every few seconds by the process running the run (see
    ``agentflow.runfiles.Heartbeat``); a stale one means the process is gone."""
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    """The pid of the process running (or that last ran) the run."""
    host: Mapped[Optional[str]] = mapped_column(String(255))
    """The host name of that process."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    attempts: Mapped[list["RolloutAttempt"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                             passive_deletes=True)

    def __repr__(self) -> str:
        return f"<RolloutRun {self.id} {self.status}>"


class RolloutAttempt(Base):
    """One try of one task sample: outcome, answer, score, usage and timing."""

    __tablename__ = "rollout_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rollout_runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(200))
    sample_index: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), index=True)
    question: Mapped[str] = mapped_column(Text)
    ground_truth: Mapped[Optional[Any]] = mapped_column(JSON)
    """The accepted answer, or list of accepted answers."""
    task_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The task's ``kwargs`` and other fields."""
    prediction: Mapped[Optional[str]] = mapped_column(Text)
    """The extracted final answer."""
    final_response: Mapped[Optional[str]] = mapped_column(Text)
    """The model's whole last reply."""
    metric: Mapped[Optional[str]] = mapped_column(String(64))
    score: Mapped[Optional[float]] = mapped_column(Float)
    """0..1; NULL when not evaluated or unscored (e.g. an unparseable judge verdict)."""
    scored: Mapped[bool] = mapped_column(Boolean, default=False)
    score_details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[Optional[str]] = mapped_column(Text)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    tool_call_count: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The part of ``prompt_tokens`` served from the provider's prompt cache (0 for
    attempts from before it was recorded)."""
    trace_id: Mapped[str] = mapped_column(String(200), index=True)
    """Sent with every tool call of the attempt; the server's ``tool_calls.trace_id``."""
    worker_id: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    model_ms: Mapped[float] = mapped_column(Float, default=0.0)
    """Time spent waiting for the model (judge excluded)."""
    tool_ms: Mapped[float] = mapped_column(Float, default=0.0)
    """Time spent waiting for the sandbox."""
    model_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Chat completions the agent made in this attempt, cache hits included."""
    cache_hits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Of ``model_calls``, those answered by the model-call cache (not paid: the token
    columns above count only the calls that reached the model)."""

    run: Mapped[RolloutRun] = relationship(back_populates="attempts")
    messages: Mapped[list["RolloutMessage"]] = relationship(
        back_populates="attempt", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RolloutMessage.position")
    tool_calls: Mapped[list["RolloutToolCall"]] = relationship(
        back_populates="attempt", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RolloutToolCall.id")

    __table_args__ = (UniqueConstraint("run_id", "task_id", "sample_index", "attempt",
                                       name="uq_rollout_attempts_key"),)

    def __repr__(self) -> str:
        return f"<RolloutAttempt {self.run_id}/{self.task_id}#{self.sample_index}.{self.attempt} {self.status}>"


class RolloutMessage(Base):
    """One message of an attempt's conversation, as the model saw it (tool output capped)."""

    __tablename__ = "rollout_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("rollout_attempts.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    turn: Mapped[int] = mapped_column(Integer, default=0)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[Optional[str]] = mapped_column(Text)
    tool_calls: Mapped[Optional[list[Any]]] = mapped_column(JSON)
    tool_call_id: Mapped[Optional[str]] = mapped_column(String(200))
    prompt_tokens: Mapped[Optional[int]] = mapped_column(Integer)
    completion_tokens: Mapped[Optional[int]] = mapped_column(Integer)
    cached_prompt_tokens: Mapped[Optional[int]] = mapped_column(Integer)
    latency_ms: Mapped[Optional[float]] = mapped_column(Float)
    finish_reason: Mapped[Optional[str]] = mapped_column(String(32))
    cache_hit: Mapped[Optional[bool]] = mapped_column(Boolean)
    """An assistant message the model-call cache answered (its token fields are those the
    provider reported when the call was first made; it cost nothing this time)."""

    attempt: Mapped[RolloutAttempt] = relationship(back_populates="messages")

    def __repr__(self) -> str:
        return f"<RolloutMessage {self.attempt_id}:{self.position} {self.role}>"


class RolloutToolCall(Base):
    """One tool call the model asked for, with the full result (uncapped)."""

    __tablename__ = "rollout_tool_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("rollout_attempts.id", ondelete="CASCADE"), index=True)
    turn: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    """The function name the model wrote."""
    action: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The server tool it resolved to (NULL for an unknown name)."""
    arguments: Mapped[str] = mapped_column(Text, default="")
    """The raw argument text from the model."""
    params: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    """The parameters sent (task kwargs merged in); NULL when not executed."""
    code: Mapped[Optional[int]] = mapped_column(Integer)
    """The envelope code; NULL when the call was not executed."""
    error: Mapped[Optional[str]] = mapped_column(Text)
    result: Mapped[Optional[str]] = mapped_column(Text)
    """The full tool answer (envelope ``data`` as JSON, or the error text)."""
    result_chars: Mapped[int] = mapped_column(Integer, default=0)
    prompt_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    trace_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    request_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The server's request id: ``tool_calls.request_id`` of the audit row."""
    session_id: Mapped[Optional[str]] = mapped_column(String(200))
    result_meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    """Metadata of the result kept out of the prompt (timing such as ``duration_ms``,
    ``elapsed_ms``), so the model's input is a function of the task and the results alone."""
    replayed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The result was served from the recorded run named by the config key ``replay``
    (the tool was not called; ``request_id`` is the recorded call's)."""

    attempt: Mapped[RolloutAttempt] = relationship(back_populates="tool_calls")

    def __repr__(self) -> str:
        return f"<RolloutToolCall {self.attempt_id} {self.name} code={self.code}>"


class RolloutScoring(Base):
    """One rescoring of a run's stored predictions (``agentflow runs rescore``): the metric,
    the judge model (for ``llm_judge``) and when. Rescorings are versions: a new one never
    changes the attempts' own scores (those the run wrote) nor an older rescoring."""

    __tablename__ = "rollout_scorings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rollout_runs.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(64))
    judge_model: Mapped[Optional[str]] = mapped_column(String(200))
    """The judge's model name for ``llm_judge``; NULL for text metrics."""
    judge_base_url: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    scores: Mapped[list["RolloutAttemptScore"]] = relationship(
        back_populates="scoring", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RolloutAttemptScore.attempt_id")

    def __repr__(self) -> str:
        return f"<RolloutScoring {self.id} {self.run_id} {self.metric}>"


class RolloutAttemptScore(Base):
    """One attempt's score under one rescoring."""

    __tablename__ = "rollout_attempt_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scoring_id: Mapped[int] = mapped_column(ForeignKey("rollout_scorings.id", ondelete="CASCADE"), index=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("rollout_attempts.id", ondelete="CASCADE"), index=True)
    score: Mapped[Optional[float]] = mapped_column(Float)
    """0..1; NULL when unscored (e.g. an unparseable judge verdict)."""
    scored: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    scoring: Mapped[RolloutScoring] = relationship(back_populates="scores")

    __table_args__ = (UniqueConstraint("scoring_id", "attempt_id", name="uq_rollout_attempt_scores_key"),)


# ``agentflow.db`` imports this module; importing the work-claims table from here
# registers it on ``Base.metadata`` with the run tables it serves (rollout and synthesis).
from . import claims as _claims  # noqa: E402,F401
