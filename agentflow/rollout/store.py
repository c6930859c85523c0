"""Persistence of rollout runs: the database rows, and the files exported from them.

Functions here take a SQLAlchemy ``Session`` and never commit; the runner commits once
per finished task. ``results.jsonl``, ``trajectories.jsonl`` and ``summary.json`` are
always produced from the database by :func:`export_run`, the same code that
``agentflow runs export`` uses, so the files and the database cannot disagree.
"""
from __future__ import annotations

import collections
import json
import re
import statistics
from pathlib import Path
from typing import Any

from sqlalchemy import exists, insert, select
from sqlalchemy.orm import Session, aliased, object_session, selectinload

from ..runfiles import effective_status, write_lines
from ..db.base import isoformat, utcnow
from ..db.rollout import (
    ATTEMPT_COMPLETED,
    ATTEMPT_INFRA_ERROR,
    RolloutAttempt,
    RolloutMessage,
    RolloutRun,
    RolloutScoring,
    RolloutToolCall,
)
from .agent import NODE_LOST_PREFIX, REPLAY_PREFIX, AgentResult
from .cost import attempt_cost, cost_summary, run_pricing, scoring_judge_cost
from .metrics import PASS_THRESHOLD, Score, pass_at_k
from .tasks import Task

__all__ = ["AttemptScores", "add_attempt", "breakdown", "cache_summary", "error_reason", "export_run", "get_run", "latest_attempts", "list_runs",
           "progress_counts", "summarize", "top_errors"]

RESULTS_FILE = "results.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"
SUMMARY_FILE = "summary.json"


def get_run(session: Session, run_id: str) -> RolloutRun | None:
    return session.get(RolloutRun, run_id)


def list_runs(session: Session, limit: int = 50) -> list[RolloutRun]:
    return list(session.scalars(select(RolloutRun).order_by(RolloutRun.created_at.desc()).limit(limit)))


def progress_counts(session: Session, run_id: str) -> dict[str, int]:
    """Newest attempts of a run by status (live, for a run still going)."""
    out: dict[str, int] = {}
    for a in latest_attempts(session, run_id).values():
        out[a.status] = out.get(a.status, 0) + 1
    return out


def newest_attempt():
    """SQL condition: the attempt is the newest of its task sample (no later attempt of
    the same run, task and sample) — a condition, so pages can sort and page in SQL."""
    later = aliased(RolloutAttempt)
    return ~exists().where(later.run_id == RolloutAttempt.run_id, later.task_id == RolloutAttempt.task_id,
                           later.sample_index == RolloutAttempt.sample_index, later.attempt > RolloutAttempt.attempt)


def latest_attempts(session: Session, run_id: str) -> dict[tuple[str, int], RolloutAttempt]:
    """The newest attempt of each (task_id, sample_index) of a run."""
    rows = session.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id, newest_attempt()))
    return {(a.task_id, a.sample_index): a for a in rows}


def add_attempt(session: Session, *, run_id: str, task: Task, sample_index: int, attempt: int, result: AgentResult,
                score: Score | None, metric: str | None, trace_id: str, worker_id: str) -> int:
    """Add one finished attempt with its messages and tool calls (not committed); returns
    the attempt's id.

    Core inserts (the attempt, then its messages and its tool calls as one executemany
    each) rather than ORM objects: the same rows, without the unit of work's bookkeeping,
    which cost more than the inserts themselves on every finished task.
    """
    attempt_id = session.execute(insert(RolloutAttempt.__table__).returning(RolloutAttempt.__table__.c.id), dict(
        run_id=run_id, task_id=task.id, sample_index=sample_index, attempt=attempt, status=result.status,
        question=task.question, ground_truth=task.answer,
        task_metadata={**({"kwargs": task.kwargs} if task.kwargs else {}), **task.metadata},
        prediction=result.prediction, final_response=result.final_response, metric=metric,
        score=score.value if score else None, scored=bool(score and score.value is not None),
        score_details=score.details if score else {}, error=result.error, turns=result.turns,
        tool_call_count=len(result.tool_calls), prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens, total_tokens=result.usage.total_tokens,
        cached_prompt_tokens=result.usage.cached_prompt_tokens, trace_id=trace_id, worker_id=worker_id,
        started_at=result.started_at, finished_at=result.finished_at,
        duration_ms=result.duration_ms, model_ms=result.model_ms, tool_ms=result.tool_ms,
        model_calls=result.model_calls, cache_hits=result.cache_hits,
    )).scalar_one()
    if result.messages:
        session.execute(insert(RolloutMessage.__table__), [dict(
            attempt_id=attempt_id, position=position, turn=m.get("turn", 0), role=m["role"], content=m.get("content"),
            tool_calls=m.get("tool_calls"), tool_call_id=m.get("tool_call_id"),
            prompt_tokens=m.get("prompt_tokens"), completion_tokens=m.get("completion_tokens"),
            cached_prompt_tokens=m.get("cached_prompt_tokens"), latency_ms=m.get("latency_ms"),
            finish_reason=m.get("finish_reason"), cache_hit=m.get("cache_hit"))
            for position, m in enumerate(result.messages)])
    if result.tool_calls:
        session.execute(insert(RolloutToolCall.__table__), [dict(
            attempt_id=attempt_id, turn=c["turn"], call_id=c["call_id"], name=c["name"], action=c["action"],
            arguments=c["arguments"] or "", params=c["params"], code=c["code"], error=c["error"], result=c["result"],
            result_chars=c.get("result_chars", 0), prompt_truncated=c.get("prompt_truncated", False),
            duration_ms=c["duration_ms"], trace_id=c["trace_id"], request_id=c["request_id"],
            session_id=c["session_id"], result_meta=c.get("result_meta"), replayed=bool(c.get("replayed")))
            for c in result.tool_calls])
    return attempt_id


def _task_order(run: RolloutRun) -> dict[str, int]:
    ids = ((run.spec or {}).get("dataset") or {}).get("task_ids") or []
    return {t: i for i, t in enumerate(ids)}


class AttemptScores:
    """The score of each attempt: the one the run gave it, or the one a rescoring
    (``rollout_scorings``) gave it. An attempt the rescoring does not cover (it finished
    after the rescoring, on a resume) is unscored under it."""

    def __init__(self, scoring: RolloutScoring | None = None):
        self.scoring = scoring
        self._rows = {s.attempt_id: s for s in scoring.scores} if scoring is not None else None

    def score(self, a: RolloutAttempt) -> float | None:
        if self._rows is None:
            return a.score
        row = self._rows.get(a.id)
        return row.score if row is not None else None

    def scored(self, a: RolloutAttempt) -> bool:
        if self._rows is None:
            return a.scored
        row = self._rows.get(a.id)
        return bool(row is not None and row.scored)

    def details(self, a: RolloutAttempt) -> dict:
        if self._rows is None:
            return a.score_details or {}
        row = self._rows.get(a.id)
        return (row.details or {}) if row is not None else {"unscored_reason": "not in this scoring"}

    def metric(self, run: RolloutRun) -> str | None:
        spec = run.spec or {}
        if self.scoring is not None:
            return self.scoring.metric
        return spec.get("metric") if spec.get("scoring") else None

    def describe(self) -> dict | None:
        """The chosen rescoring (None: the run's own scores)."""
        s = self.scoring
        if s is None:
            return None
        return {"id": s.id, "metric": s.metric, "judge_model": s.judge_model, "created_at": isoformat(s.created_at)}


def summarize(run: RolloutRun, attempts: list[RolloutAttempt], scores: AttemptScores | None = None) -> dict:
    """The run summary from its newest attempts (see the README for each field), scored
    as the run scored them or, with ``scores``, as a rescoring did."""
    scores = scores or AttemptScores()
    spec = run.spec or {}
    config = spec.get("config") or {}
    scoring = bool(spec.get("scoring")) or scores.scoring is not None
    n_samples = int(config.get("n_samples") or 1)
    done = attempts
    completed = [a for a in done if a.status == ATTEMPT_COMPLETED]
    scored = [a for a in done if scores.scored(a) or a.status != ATTEMPT_COMPLETED]
    outcomes: dict[str, int] = {}
    for a in done:
        outcomes[a.status] = outcomes.get(a.status, 0) + 1
    summary: dict[str, Any] = {
        "run_id": run.id,
        "benchmark_name": run.benchmark_name,
        "model_name": run.model_name,
        "status": effective_status(run),
        "metric": scores.metric(run),
        "scoring": scores.describe(),
        "accuracy": None,
        "average_score": None,
        "total_tasks": len(((spec.get("dataset") or {}).get("task_ids")) or []) or run.total_tasks // n_samples,
        "total_samples": run.total_tasks,
        "n_samples": n_samples,
        "completed": len(completed),
        "failed": len(done) - len(completed),
        "unscored": sum(1 for a in completed if not scores.scored(a)) if scoring else 0,
        "pending": max(run.total_tasks - len(done), 0),
        "infra_errors": outcomes.get(ATTEMPT_INFRA_ERROR, 0),
        "outcomes": outcomes,
        "error": run.error,
        "breakdown": breakdown(done),
        "top_errors": top_errors(done),
    }
    if scoring and scored:
        summary["accuracy"] = round(sum(scores.score(a) or 0.0 for a in scored) / len(scored), 6)
        answered = [scores.score(a) for a in completed if scores.scored(a)]
        summary["average_score"] = round(statistics.fmean(answered), 6) if answered else 0.0
    if scoring and n_samples > 1:
        summary["pass_at_k"] = _pass_at_k(done, n_samples, scores)
    durations = [a.duration_ms for a in done]
    summary.update({
        "total_turns": sum(a.turns for a in done),
        "total_tool_calls": sum(a.tool_call_count for a in done),
        "prompt_tokens": sum(a.prompt_tokens for a in done),
        "completion_tokens": sum(a.completion_tokens for a in done),
        "total_tokens": sum(a.total_tokens for a in done),
        "started_at": isoformat(run.created_at),
        "finished_at": isoformat(run.finished_at),
        "wall_time_s": round((run.finished_at - run.created_at).total_seconds(), 3) if run.finished_at else None,
        "task_time_s_total": round(sum(durations) / 1000, 3),
        "task_time_s_mean": round(statistics.fmean(durations) / 1000, 3) if durations else None,
        "model_time_s_total": round(sum(a.model_ms for a in done) / 1000, 3),
        "tool_time_s_total": round(sum(a.tool_ms for a in done) / 1000, 3),
    })
    every = _every_attempt(run, done)
    summary.update(cost_summary(run, every))
    summary["model_cache"] = cache_summary(run, every)
    if scores.scoring is not None:  # what the rescoring's judge calls cost (a text metric costs nothing)
        summary["scoring"]["judge_cost_usd"] = scoring_judge_cost(run, scores.scoring)
        summary["scoring"]["judge_cache_hits"] = sum(1 for row in scores.scoring.scores
                                                     if (row.details or {}).get("judge_cache_hit"))
    return summary


COST_COLUMNS = (RolloutAttempt.prompt_tokens, RolloutAttempt.completion_tokens, RolloutAttempt.cached_prompt_tokens,
                RolloutAttempt.score_details, RolloutAttempt.model_calls, RolloutAttempt.cache_hits)
"""What :func:`~agentflow.rollout.cost.cost_summary` and :func:`cache_summary` read of an attempt."""


def cache_summary(run: RolloutRun, attempts: list) -> dict:
    """The model-call cache of a run: its mode, the agent's and the judge's calls over
    every attempt (retried ones too), how many the cache answered, and the size of the
    (shared) cache table with the entries this run paid for."""
    from sqlalchemy import func

    from ..db.model_cache import ModelCacheEntry

    calls = sum(a.model_calls or 0 for a in attempts)
    hits = sum(a.cache_hits or 0 for a in attempts)
    judged = [a.score_details or {} for a in attempts if (a.score_details or {}).get("judge_model")]
    judge_hits = sum(1 for d in judged if d.get("judge_cache_hit"))
    out: dict[str, Any] = {
        "mode": ((run.spec or {}).get("config") or {}).get("cache"),
        "calls": calls + len(judged), "hits": hits + judge_hits, "misses": calls + len(judged) - hits - judge_hits,
        "hit_rate": round((hits + judge_hits) / (calls + len(judged)), 6) if calls + len(judged) else None,
        "agent_calls": calls, "agent_hits": hits, "judge_calls": len(judged), "judge_hits": judge_hits,
        "entries": None, "size_bytes": None, "entries_written": None,
    }
    session = object_session(run)
    if session is not None:
        entries, size = session.execute(select(func.count(), func.coalesce(func.sum(ModelCacheEntry.size_bytes), 0))
                                        .select_from(ModelCacheEntry)).one()
        written = session.scalar(select(func.count()).select_from(ModelCacheEntry)
                                 .where(ModelCacheEntry.run_id == run.id))
        out.update(entries=int(entries), size_bytes=int(size), entries_written=int(written or 0))
    return out


def _every_attempt(run: RolloutRun, newest: list) -> list:
    """Every attempt of the run (its cost columns), retried ones too: all were paid for.
    (The newest ones alone for a run no longer in a session.)"""
    session = object_session(run)
    if session is None:
        return newest
    return list(session.execute(select(*COST_COLUMNS).where(RolloutAttempt.run_id == run.id)))


_REQUEST_ID = re.compile(r",? ?request_id=[^,)\s]+")
_HTTP = re.compile(r"\(HTTP (\d{3})")


def error_reason(status: str, error: str | None) -> str:
    """A short reason for an attempt's outcome: the error class and HTTP status for a
    model failure (``LLMAuthError HTTP 401``), ``sandbox`` for a sandbox failure, the
    outcome itself otherwise."""
    if status == ATTEMPT_COMPLETED:
        return "answered"
    if not error:
        return status
    head = error.split(":", 1)[0].strip()
    if head.startswith("LLM") and " " not in head:
        m = _HTTP.search(error)
        return f"{head} HTTP {m.group(1)}" if m else head
    if error.startswith("sandbox failure"):
        return "SandboxError"
    if error.startswith(NODE_LOST_PREFIX):
        return "node_lost"
    if error.startswith(REPLAY_PREFIX):
        return "replay_mismatch"
    if error.startswith("unexpected "):
        return head.replace("unexpected ", "") or "unexpected"
    if error.startswith("no final answer after max_turns"):
        return "max_turns"
    if error.startswith("task_timeout"):
        return "task_timeout"
    return head[:60]


def error_signature(error: str | None) -> str:
    """An error text without the provider's request id (equal for the same failure)."""
    return _REQUEST_ID.sub("", error or "").replace(" ()", "").strip()


def breakdown(attempts: list[RolloutAttempt]) -> list[dict]:
    """Counts by (outcome, reason), largest first."""
    counts = collections.Counter((a.status, error_reason(a.status, a.error)) for a in attempts)
    return [{"outcome": o, "reason": r, "count": n}
            for (o, r), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def top_errors(attempts: list[RolloutAttempt], limit: int = 5) -> list[dict]:
    """The most frequent error messages (request ids left out), with counts."""
    counts = collections.Counter(error_signature(a.error) for a in attempts
                                 if a.error and a.status != ATTEMPT_COMPLETED)
    return [{"message": m, "count": n} for m, n in counts.most_common(limit)]


def _pass_at_k(attempts: list[RolloutAttempt], n: int, scores: AttemptScores) -> dict[str, float]:
    by_task: dict[str, list[RolloutAttempt]] = {}
    for a in attempts:
        by_task.setdefault(a.task_id, []).append(a)
    full = [v for v in by_task.values() if len(v) == n]
    if not full:
        return {}
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n} | {n})
    out = {}
    for k in ks:
        values = [pass_at_k(n, sum(1 for a in v if (scores.score(a) or 0.0) >= PASS_THRESHOLD), k) for v in full]
        out[f"pass@{k}"] = round(statistics.fmean(values), 6)
    return out


def result_row(a: RolloutAttempt, cost: float | None = None) -> dict:
    """One line of ``results.jsonl``; ``cost`` is the attempt's agent and judge cost
    (``None``: unknown)."""
    return {
        "id": a.task_id, "sample": a.sample_index, "attempt": a.attempt, "status": a.status,
        "question": a.question, "answer": a.ground_truth, "prediction": a.prediction,
        "score": a.score, "scored": a.scored, "metric": a.metric, "score_details": a.score_details,
        "error": a.error, "turns": a.turns, "tool_calls": a.tool_call_count,
        "usage": {"prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                  "total_tokens": a.total_tokens, "cached_prompt_tokens": a.cached_prompt_tokens or 0},
        "cost_usd": cost,
        "duration_ms": round(a.duration_ms, 3), "trace_id": a.trace_id, "metadata": a.task_metadata,
    }


def trajectory_row(a: RolloutAttempt) -> dict:
    return {
        "id": a.task_id, "sample": a.sample_index, "attempt": a.attempt, "status": a.status,
        "trace_id": a.trace_id, "worker_id": a.worker_id,
        "messages": [{k: v for k, v in (("role", m.role), ("content", m.content), ("tool_calls", m.tool_calls),
                                        ("tool_call_id", m.tool_call_id)) if v is not None} for m in a.messages],
        "tool_calls": [{"turn": c.turn, "call_id": c.call_id, "name": c.name, "action": c.action,
                        "arguments": c.arguments, "params": c.params, "code": c.code, "error": c.error,
                        "result": c.result, "result_meta": c.result_meta, "replayed": c.replayed,
                        "duration_ms": round(c.duration_ms, 3), "request_id": c.request_id}
                       for c in a.tool_calls],
    }


def export_run(session: Session, run_id: str, output_dir: str | Path | None = None, *, results: bool = True,
               trajectories: bool = True, summary_file: bool = True) -> dict:
    """Write ``results.jsonl`` (and ``trajectories.jsonl``, ``summary.json``) for a run
    from the database, and return the summary (with the file paths it wrote).

    ``output_dir`` defaults to the run's own. Files are written to a temporary name and
    renamed, so a reader never sees half a file.

    Raises:
        LookupError: no such run.
    """
    run = get_run(session, run_id)
    if run is None:
        raise LookupError(f"no rollout run {run_id!r} in this database")
    order = _task_order(run)
    newest = latest_attempts(session, run_id)
    ids = [a.id for a in newest.values()]
    attempts = list(session.scalars(
        select(RolloutAttempt).where(RolloutAttempt.id.in_(ids))
        .options(selectinload(RolloutAttempt.messages), selectinload(RolloutAttempt.tool_calls)))) if ids else []
    attempts.sort(key=lambda a: (order.get(a.task_id, len(order)), a.task_id, a.sample_index))
    summary = summarize(run, attempts)
    target = Path(output_dir or run.output_dir or ".")
    if results or trajectories or summary_file:
        target.mkdir(parents=True, exist_ok=True)
    summary["results_file"] = str(target / RESULTS_FILE) if results else None
    summary["trajectories_file"] = str(target / TRAJECTORIES_FILE) if trajectories else None
    summary["summary_file"] = str(target / SUMMARY_FILE) if summary_file else None
    if results:
        pricing = run_pricing(run)
        write_lines(target / RESULTS_FILE,
                    (json.dumps(result_row(a, attempt_cost(pricing, run.model_name, a)), ensure_ascii=False,
                                default=str) for a in attempts))
    if trajectories:
        write_lines(target / TRAJECTORIES_FILE,
               (json.dumps(trajectory_row(a), ensure_ascii=False, default=str) for a in attempts))
    if summary_file:
        write_lines(target / SUMMARY_FILE, [json.dumps(summary, indent=2, ensure_ascii=False, default=str)])
    return summary


def touch_run(run: RolloutRun, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(run, key, value)
    run.updated_at = utcnow()
