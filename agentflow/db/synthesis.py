"""Synthesis tables: runs, seeds, tree nodes, scored paths and QA candidates.

A run (``synthesis_runs``) holds the spec that rebuilds it and the fingerprint resume
checks. Each seed of the run is a ``synthesis_seeds`` row whose ``status`` moves
``pending → sampling → sampled → done`` (or ``error``, retried on resume). The tree of a
seed is in ``synthesis_nodes``: one ``root`` row (depth 0), then one row per expansion,
committed the moment it is made — an ``action`` (a tool call that ran, with its intent,
parameters, observation, timing and trace id), a ``stop`` (the model ended the branch)
or a ``failed`` expansion (no usable action after retries). ``(seed_id, action_key)`` is
unique, so the database itself refuses a repeated action in one tree.

``synthesis_paths`` are the root-to-leaf paths considered by selection, with their score
parts and whether they were chosen; ``synthesis_qa`` holds every QA candidate written for
a chosen path, ``accepted`` or ``rejected`` with the reason.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

RUN_RUNNING = "running"
RUN_SUCCESS = "success"
RUN_ERROR = "error"
RUN_CANCELLED = "cancelled"
RUN_INTERRUPTED = "interrupted"
"""Shown (never stored) for a ``running`` run whose process is gone: see
``agentflow.runfiles.effective_status``."""

SEED_PENDING = "pending"
SEED_SAMPLING = "sampling"
SEED_SAMPLED = "sampled"
"""The tree is complete; selection and QA may still be missing."""
SEED_DONE = "done"
SEED_ERROR = "error"
"""The sandbox or the model failed (after retries); the seed is continued on resume."""

NODE_ROOT = "root"
NODE_ACTION = "action"
NODE_STOP = "stop"
NODE_FAILED = "failed"

QA_ACCEPTED = "accepted"
QA_REJECTED = "rejected"


class SynthesisRun(Base):
    """One synthesis run over one seeds file."""

    __tablename__ = "synthesis_runs"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=RUN_RUNNING, index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """sha256 of the run's identity (see ``agentflow.synthesis.config.run_identity``)."""
    fingerprint_version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The config (secrets masked), the hashed identity and the seeds' checksum."""
    total_seeds: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    """The run report (counts of seeds, nodes, paths, QA by outcome and reason)."""
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

    seeds: Mapped[list["SynthesisSeed"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                        passive_deletes=True, order_by="SynthesisSeed.seed_index")

    def __repr__(self) -> str:
        return f"<SynthesisRun {self.id} {self.status}>"


class SynthesisSeed(Base):
    """One seed of a run and how far it got."""

    __tablename__ = "synthesis_seeds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("synthesis_runs.id", ondelete="CASCADE"), index=True)
    seed_index: Mapped[int] = mapped_column(Integer)
    """Position in the seeds file (0-based)."""
    content: Mapped[str] = mapped_column(Text)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Parameters merged into every tool call that accepts them (e.g. ``seed_path``)."""
    status: Mapped[str] = mapped_column(String(16), default=SEED_PENDING, index=True)
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker_id: Mapped[Optional[str]] = mapped_column(String(200))
    """The sandbox ``worker_id`` the seed's tool calls were made as."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """How many times the seed was started (more than 1 after a resume)."""
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    run: Mapped[SynthesisRun] = relationship(back_populates="seeds")

    __table_args__ = (UniqueConstraint("run_id", "seed_index", name="uq_synthesis_seeds_run_index"),)

    def __repr__(self) -> str:
        return f"<SynthesisSeed {self.run_id}#{self.seed_index} {self.status}>"


class SynthesisNode(Base):
    """One node of a seed's exploration tree, stored as soon as it is made."""

    __tablename__ = "synthesis_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("synthesis_runs.id", ondelete="CASCADE"), index=True)
    seed_id: Mapped[int] = mapped_column(ForeignKey("synthesis_seeds.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("synthesis_nodes.id", ondelete="CASCADE"),
                                                     index=True)
    depth: Mapped[int] = mapped_column(Integer)
    """0 for the root; a node's depth is its number of actions from the root."""
    branch: Mapped[int] = mapped_column(Integer, default=0)
    """Position among its siblings (0-based)."""
    kind: Mapped[str] = mapped_column(String(16), index=True)
    """``root``, ``action``, ``stop`` (the model ended the branch) or ``failed``."""
    intent: Mapped[Optional[str]] = mapped_column(Text)
    """What the model said it wanted to learn (its text beside the tool call), or why it stopped."""
    tool_name: Mapped[Optional[str]] = mapped_column(String(200))
    """The function name the model called."""
    action: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The server tool (``rag:search``)."""
    params: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    """The parameters sent (seed kwargs merged in)."""
    action_key: Mapped[Optional[str]] = mapped_column(String(64))
    """sha256 of the tool and its normalised parameters; unique within a seed's tree."""
    observation: Mapped[Optional[str]] = mapped_column(Text)
    """The tool answer (envelope ``data`` as JSON, or the error text)."""
    observation_chars: Mapped[int] = mapped_column(Integer, default=0)
    code: Mapped[Optional[int]] = mapped_column(Integer)
    """The envelope code (0 success, 2001 tool failed, 1002 bad parameter, ...)."""
    error: Mapped[Optional[str]] = mapped_column(Text)
    refused: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Proposals refused before this node was made (duplicates, unknown tools, bad JSON)."""
    trace_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """Sent with the tool call; the server's ``tool_calls.trace_id`` (one per seed)."""
    request_id: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    """The server's request id: ``tool_calls.request_id`` of the audit row."""
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    model_ms: Mapped[float] = mapped_column(Float, default=0.0)
    tool_ms: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("seed_id", "action_key", name="uq_synthesis_nodes_seed_action"),)

    def __repr__(self) -> str:
        return f"<SynthesisNode {self.id} d={self.depth} {self.kind} {self.action or ''}>"


class SynthesisPath(Base):
    """A root-to-leaf path considered by selection, with its score."""

    __tablename__ = "synthesis_paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("synthesis_runs.id", ondelete="CASCADE"), index=True)
    seed_id: Mapped[int] = mapped_column(ForeignKey("synthesis_seeds.id", ondelete="CASCADE"), index=True)
    leaf_node_id: Mapped[int] = mapped_column(ForeignKey("synthesis_nodes.id", ondelete="CASCADE"))
    node_ids: Mapped[list[int]] = mapped_column(JSON)
    """The action nodes from depth 1 to the leaf."""
    depth: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    depth_score: Mapped[float] = mapped_column(Float)
    info_score: Mapped[float] = mapped_column(Float)
    diversity_score: Mapped[float] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    rank: Mapped[Optional[int]] = mapped_column(Integer)
    """1-based order of choice among the selected paths."""
    max_similarity: Mapped[float] = mapped_column(Float, default=0.0)
    """Highest similarity to a path chosen before it."""
    note: Mapped[Optional[str]] = mapped_column(Text)
    """Why a path was not chosen (``too similar to path 12 (0.75)``, ``max_selected_traj reached``)."""

    def __repr__(self) -> str:
        return f"<SynthesisPath {self.id} depth={self.depth} score={self.score:.3f} selected={self.selected}>"


class SynthesisQA(Base):
    """One QA candidate written for a selected path, accepted or rejected."""

    __tablename__ = "synthesis_qa"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("synthesis_runs.id", ondelete="CASCADE"), index=True)
    seed_id: Mapped[int] = mapped_column(ForeignKey("synthesis_seeds.id", ondelete="CASCADE"), index=True)
    path_id: Mapped[int] = mapped_column(ForeignKey("synthesis_paths.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """``accepted`` or ``rejected``."""
    reason: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    """The first failed check: ``malformed``, ``too_long``, ``too_short``, ``answer_leaked``,
    ``unsupported_answer``, ``too_few_hops``, ``overlaps_benchmark``, ``duplicate_question``, ``model_error``."""
    checks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Every check's outcome and details."""
    question: Mapped[Optional[str]] = mapped_column(Text)
    answer: Mapped[Optional[str]] = mapped_column(Text)
    reasoning_steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    raw: Mapped[Optional[str]] = mapped_column(Text)
    """What the model sent (the arguments of its ``submit_qa`` call, or its text)."""
    model_name: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<SynthesisQA {self.id} {self.status} {self.reason or ''}>"


class SynthesisQAAttempt(Base):
    """Links a QA pair to a rollout attempt that answered it as a benchmark task
    (``agentflow runs export SYNTH_RUN --as-benchmark``, then ``agentflow rollout``).

    A row is written with its attempt, in the same transaction, when the task line named
    the QA pair (its ``synthesis: {run_id, qa_id}`` field) and that pair is in the
    rollout's database with the same question. A QA pair's difficulty (pass@k) is
    computed from these links: the newest attempt of each sample, scored by the rollout
    run's newest rescoring (else as the run scored it) — see
    :func:`agentflow.synthesis.difficulty.qa_difficulty`. So a resume (new attempts get
    new links) and a rescoring (new scores) both change it; nothing is stored twice."""

    __tablename__ = "synthesis_qa_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    qa_id: Mapped[int] = mapped_column(ForeignKey("synthesis_qa.id", ondelete="CASCADE"), index=True)
    rollout_run_id: Mapped[str] = mapped_column(ForeignKey("rollout_runs.id", ondelete="CASCADE"), index=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("rollout_attempts.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("attempt_id", name="uq_synthesis_qa_attempts_attempt"),)

    def __repr__(self) -> str:
        return f"<SynthesisQAAttempt qa={self.qa_id} attempt={self.attempt_id}>"
