"""The runs list (rollout and synthesis, newest first) and the live progress of runs."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ...db.rollout import RUN_RUNNING, RolloutRun
from ...db.synthesis import SynthesisRun
from ...runfiles import effective_status
from ...synthesis.store import report as synthesis_report
from ..errors import BadParameter
from . import like_pattern
from .rollout import live_counts, run_summary

__all__ = ["KINDS", "STATUSES", "RunRow", "benchmarks", "list_runs", "progress"]

KINDS = ("rollout", "synthesis")
STATUSES = ("running", "success", "error", "cancelled", "interrupted")
PER_PAGE = 50


@dataclasses.dataclass
class RunRow:
    kind: str
    id: str
    status: str
    benchmark: str
    model: str
    created_at: dt.datetime
    wall_time_s: float | None
    done: int
    total: int
    failed: int
    unscored: int
    accuracy: float | None
    pass_at_k: dict
    tokens: int
    qa_accepted: int = 0
    qa_rejected: int = 0
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.status == RUN_RUNNING


def rollout_row(session: Session, run: RolloutRun) -> RunRow:
    """A finished run from its stored summary; a running one from counts made in SQL (its
    accuracy shows once it ends — the run's page has the live summary)."""
    if run.status == RUN_RUNNING or not run.summary:
        c = live_counts(session, run.id)
        return RunRow("rollout", run.id, effective_status(run), run.benchmark_name, run.model_name, run.created_at,
                      _elapsed(run), c["done"], run.total_tasks, c["failed"], 0, None, {}, c["tokens"],
                      error=run.error)
    s = run_summary(session, run)
    return RunRow("rollout", run.id, effective_status(run), run.benchmark_name, run.model_name, run.created_at,
                  s.get("wall_time_s"), s["completed"] + s["failed"], run.total_tasks, s["failed"],
                  s.get("unscored", 0), s.get("accuracy"), s.get("pass_at_k") or {}, s.get("total_tokens", 0),
                  error=run.error)


def synthesis_row(session: Session, run: SynthesisRun) -> RunRow:
    rep = run.report if run.status != RUN_RUNNING and run.report else synthesis_report(session, run)
    seeds, qa, tokens = rep.get("seeds") or {}, rep.get("qa") or {}, rep.get("tokens") or {}
    errors = sum(v for k, v in (seeds.get("by_status") or {}).items() if k == "error")
    return RunRow("synthesis", run.id, effective_status(run), "", run.model_name, run.created_at,
                  rep.get("wall_time_s") if run.finished_at else _elapsed(run), seeds.get("done", 0),
                  run.total_seeds, errors, 0, None, {}, int(tokens.get("prompt", 0)) + int(tokens.get("completion", 0)),
                  qa.get("accepted", 0), qa.get("rejected", 0), error=run.error)


def _elapsed(run) -> float | None:
    beat = run.heartbeat_at or run.updated_at
    return (beat - run.created_at).total_seconds() if beat and run.created_at else None


def _filtered(model, status: str, q: str, benchmark: str):
    stmt = select(model)
    if status in ("running", "interrupted"):
        stmt = stmt.where(model.status == RUN_RUNNING)
    elif status:
        stmt = stmt.where(model.status == status)
    if q:
        like = like_pattern(q)
        fields = [model.id, model.model_name] + ([model.benchmark_name] if model is RolloutRun else [])
        stmt = stmt.where(or_(*[f.ilike(like, escape="\\") for f in fields]))
    if benchmark and model is RolloutRun:
        stmt = stmt.where(RolloutRun.benchmark_name == benchmark)
    return stmt.order_by(model.created_at.desc())


def list_runs(session: Session, *, kind: str = "", status: str = "", q: str = "", benchmark: str = "",
              page: int = 1) -> tuple[list[RunRow], bool]:
    """One page of runs, newest first, and whether there is a next page.

    Raises:
        BadParameter: unknown kind or status.
    """
    if kind and kind not in KINDS:
        raise BadParameter(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    if status and status not in STATUSES:
        raise BadParameter(f"unknown status {status!r}; one of: {', '.join(STATUSES)}")
    want = page * PER_PAGE + 1
    found: list[Any] = []
    if kind != "synthesis":
        found += [("rollout", r) for r in session.scalars(_filtered(RolloutRun, status, q, benchmark).limit(want))]
    if kind != "rollout" and not benchmark:
        found += [("synthesis", r) for r in session.scalars(_filtered(SynthesisRun, status, q, "").limit(want))]
    if status in ("running", "interrupted"):
        found = [(k, r) for k, r in found if effective_status(r) == status]
    found.sort(key=lambda kr: kr[1].created_at, reverse=True)
    chosen = found[(page - 1) * PER_PAGE: page * PER_PAGE]
    rows = [rollout_row(session, r) if k == "rollout" else synthesis_row(session, r) for k, r in chosen]
    return rows, len(found) > page * PER_PAGE


def benchmarks(session: Session) -> list[str]:
    return [b for b in session.scalars(select(RolloutRun.benchmark_name).distinct().order_by(RolloutRun.benchmark_name))
            if b]


def progress(session: Session, run_ids: list[str]) -> list[dict]:
    """Live progress of runs (for the pages' poll): status, done of total, failed, tokens
    (a running rollout counted in SQL, a running synthesis from its report's counts)."""
    out = []
    for run_id in run_ids[:50]:
        run = session.get(RolloutRun, run_id)
        if run is not None:
            row = rollout_row(session, run)
        else:
            srun = session.get(SynthesisRun, run_id)
            if srun is None:
                continue
            row = synthesis_row(session, srun)
        out.append({"id": row.id, "kind": row.kind, "status": row.status, "done": row.done, "total": row.total,
                    "failed": row.failed, "accuracy": row.accuracy, "qa_accepted": row.qa_accepted,
                    "tokens": row.tokens, "wall_time_s": row.wall_time_s})
    return out
