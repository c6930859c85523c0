"""Rollout runs for the viewer: the summary, the task table (sorted, filtered and paged
in SQL), score distribution, trajectories with their audit rows, and run comparison.

The summary comes from :func:`agentflow.rollout.store.summarize` — stored by the runner
for a finished run, computed live (from the few columns it reads) for a running one.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from ...db.rollout import ATTEMPT_COMPLETED, RUN_RUNNING, RolloutAttempt, RolloutRun
from ...rollout.metrics import PASS_THRESHOLD
from ...db.rollout import RolloutScoring
from ...rollout.rescore import UnknownScoring, choose_scoring, list_scorings
from ...rollout.store import COST_COLUMNS, AttemptScores, get_run, newest_attempt, summarize
from ...runfiles import effective_status
from ..errors import BadParameter, NotFound
from ..render import message_parts, pretty_json, result_parts
from . import like_pattern
from .tools import audit_rows

__all__ = ["OUTCOME_FILTERS", "PER_PAGE", "SORT_KEYS", "attempt_view", "compare", "live_counts", "load_run",
           "run_summary", "score_histogram", "task_attempts", "task_page"]

A = RolloutAttempt

SUMMARY_COLUMNS = (A.id, A.task_id, A.sample_index, A.status, A.score, A.scored, A.error, A.turns, A.tool_call_count,
                   A.total_tokens, A.duration_ms, A.model_ms, A.tool_ms, *COST_COLUMNS)
"""What :func:`summarize` reads of an attempt (its cost and cache figures included):
loading these columns, not whole rows, keeps a live summary of 40,000 attempts fast."""

PER_PAGE = (25, 50, 100, 200)
_score = func.avg(func.coalesce(A.score, 0.0))
_passed = func.sum(case((A.score >= PASS_THRESHOLD, 1), else_=0))
SORT_KEYS = {
    "task": A.task_id, "score": _score, "passed": _passed, "outcome": func.min(A.status),
    "turns": func.sum(A.turns), "tool_calls": func.sum(A.tool_call_count), "tokens": func.sum(A.total_tokens),
    "time": func.sum(A.duration_ms),
}
"""Sort keys of the task table (per task: samples are summed, scores averaged)."""
OUTCOME_FILTERS = ("pass", "fail", "unscored", "failed", ATTEMPT_COMPLETED, "max_turns", "timeout", "error",
                   "infra_error")
"""``pass``: a sample scored at least the pass threshold; ``fail``: a sample scored below it;
``unscored``: a completed sample without a score; ``failed``: a sample that did not
complete; the rest: a sample with that outcome."""


def load_run(session: Session, run_id: str) -> RolloutRun:
    """Raises: NotFound."""
    run = get_run(session, run_id)
    if run is None:
        raise NotFound(f"no rollout run {run_id!r} in this database")
    return run


def n_samples(run: RolloutRun) -> int:
    return int(((run.spec or {}).get("config") or {}).get("n_samples") or 1)


def chosen_scoring(session: Session, run: RolloutRun, scoring_id: int | None = None) -> RolloutScoring | None:
    """The rescoring shown: ``scoring_id``, else the run's newest (as ``agentflow runs
    show`` chooses); ``None`` when the run was never rescored.

    Raises:
        BadParameter: ``scoring_id`` is not a rescoring of this run.
    """
    try:
        return choose_scoring(session, run.id, scoring_id)
    except UnknownScoring as err:
        raise BadParameter(str(err)) from None


def scorings(session: Session, run: RolloutRun) -> list[RolloutScoring]:
    """Every rescoring of the run, oldest first."""
    return list_scorings(session, run.id)


def synthesis_sources(session: Session, run: RolloutRun) -> list[tuple[str, int]]:
    """``[(synthesis run id, QA pairs)]`` whose QA this run answered as a benchmark
    (``agentflow runs export SYNTH --as-benchmark``)."""
    from ...db.synthesis import SynthesisQA, SynthesisQAAttempt

    return [tuple(r) for r in session.execute(
        select(SynthesisQA.run_id, func.count(func.distinct(SynthesisQAAttempt.qa_id)))
        .join(SynthesisQA, SynthesisQA.id == SynthesisQAAttempt.qa_id)
        .where(SynthesisQAAttempt.rollout_run_id == run.id).group_by(SynthesisQA.run_id)
        .order_by(SynthesisQA.run_id))]


def run_summary(session: Session, run: RolloutRun, scoring: RolloutScoring | None = None) -> dict:
    """The run's summary: the stored one of a finished run, else a live one; with
    ``scoring``, computed under that rescoring (accuracy, pass@k, its judge's cost)."""
    if scoring is None and run.status != RUN_RUNNING and run.summary and "cost_usd" in run.summary:
        return {**run.summary, "status": effective_status(run), "error": run.error}
    rows = session.execute(select(*SUMMARY_COLUMNS).where(A.run_id == run.id, newest_attempt())).all()
    return summarize(run, rows, AttemptScores(scoring) if scoring is not None else None)


def live_counts(session: Session, run_id: str) -> dict:
    """Done, failed and tokens of a run's newest attempts, counted in SQL: what the pages'
    poll shows of a running run (cheap at any size; the full summary is on the page)."""
    done, failed, tokens = session.execute(
        select(func.count(), func.coalesce(func.sum(case((A.status != ATTEMPT_COMPLETED, 1), else_=0)), 0),
               func.coalesce(func.sum(A.total_tokens), 0)).where(A.run_id == run_id, newest_attempt())).one()
    return {"done": int(done), "failed": int(failed), "tokens": int(tokens)}


def score_histogram(session: Session, run_id: str, bins: int = 10) -> dict:
    """Counts of newest attempts by score bin (``[0, 0.1)``… ``[0.9, 1]``), and unscored."""
    ladder = [(A.score < (i + 1) / bins, i) for i in range(bins - 1)]
    bucket = case((A.score.is_(None), -1), *ladder, else_=bins - 1)
    counts = dict(session.execute(select(bucket, func.count()).where(A.run_id == run_id, newest_attempt())
                                  .group_by(bucket)).all())
    return {"bins": [{"lo": i / bins, "hi": (i + 1) / bins, "count": int(counts.get(i, 0))} for i in range(bins)],
            "unscored": int(counts.get(-1, 0))}


@dataclasses.dataclass
class TaskPage:
    rows: list[dict]
    total: int
    page: int
    pages: int
    per: int
    sort: str
    desc: bool
    outcome: str
    q: str


def _outcome_having(outcome: str):
    if outcome == "pass":
        return _passed > 0
    if outcome == "fail":
        return func.sum(case((and_(A.scored.is_(True), A.score < PASS_THRESHOLD), 1), else_=0)) > 0
    if outcome == "unscored":
        return func.sum(case((and_(A.status == ATTEMPT_COMPLETED, A.scored.is_(False)), 1), else_=0)) > 0
    if outcome == "failed":
        return func.sum(case((A.status != ATTEMPT_COMPLETED, 1), else_=0)) > 0
    return func.sum(case((A.status == outcome, 1), else_=0)) > 0


def task_page(session: Session, run: RolloutRun, *, sort: str = "task", desc: bool = False, outcome: str = "",
              q: str = "", page: int = 1, per: int = 50) -> TaskPage:
    """One page of the run's tasks (newest attempt of each sample), sorted and filtered in
    SQL; each row holds its samples side by side.

    Raises:
        BadParameter: unknown sort key or outcome, a page size not offered, a page past the last.
    """
    if sort not in SORT_KEYS:
        raise BadParameter(f"unknown sort key {sort!r}; sort by one of: {', '.join(SORT_KEYS)}")
    if outcome and outcome not in OUTCOME_FILTERS:
        raise BadParameter(f"unknown outcome filter {outcome!r}; one of: {', '.join(OUTCOME_FILTERS)}")
    if per not in PER_PAGE:
        raise BadParameter(f"per must be one of {', '.join(map(str, PER_PAGE))}, got {per}")
    where = [A.run_id == run.id, newest_attempt()]
    if q:
        like = like_pattern(q)
        where.append(or_(*[c.ilike(like, escape="\\") for c in (A.task_id, A.question, A.prediction, A.error)]))
    grouped = select(A.task_id.label("task_id"), *[v.label(f"k_{k}") for k, v in SORT_KEYS.items() if k != "task"],
                     func.count().label("samples")).where(*where).group_by(A.task_id)
    if outcome:
        grouped = grouped.having(_outcome_having(outcome))
    sub = grouped.subquery()
    key = sub.c.task_id if sort == "task" else sub.c[f"k_{sort}"]
    order = [key.desc() if desc else key.asc(), sub.c.task_id.asc()]
    # one pass: the page's rows, each carrying the number of rows of the whole result
    page_rows = session.execute(select(sub, func.count().over().label("total")).order_by(*order).limit(per)
                                .offset((page - 1) * per)).all()
    total = page_rows[0].total if page_rows else (session.scalar(select(func.count()).select_from(sub)) or 0)
    pages = max(1, -(-total // per))
    if page > pages:
        raise BadParameter(f"page {page} is past the last page ({pages}) of {total} task(s)")
    ids = [r.task_id for r in page_rows]
    samples: dict[str, list] = {t: [] for t in ids}
    if ids:
        for a in session.execute(select(A.id, A.task_id, A.sample_index, A.attempt, A.status, A.score, A.scored,
                                        A.prediction, A.error, A.question)
                                 .where(A.run_id == run.id, A.task_id.in_(ids), newest_attempt())
                                 .order_by(A.task_id, A.sample_index)):
            samples[a.task_id].append(a)
    rows = []
    for r in page_rows:
        first = samples[r.task_id][0] if samples[r.task_id] else None
        rows.append({"task_id": r.task_id, "samples": samples[r.task_id], "score": r.k_score, "passed": r.k_passed,
                     "turns": r.k_turns, "tool_calls": r.k_tool_calls, "tokens": r.k_tokens, "time": r.k_time,
                     "question": first.question if first else "", "n": r.samples})
    return TaskPage(rows, total, page, pages, per, sort, desc, outcome, q)


def task_attempts(session: Session, run: RolloutRun, task_id: str) -> tuple[list[RolloutAttempt], list]:
    """(the newest attempt of each sample of a task, with messages and tool calls; every
    older attempt as a row).

    Raises:
        NotFound: the run has no attempt of this task.
    """
    newest_rows = list(session.scalars(
        select(A).where(A.run_id == run.id, A.task_id == task_id, newest_attempt()).order_by(A.sample_index)
        .options(selectinload(A.messages), selectinload(A.tool_calls))))
    if not newest_rows:
        raise NotFound(f"run {run.id!r} has no finished attempt of task {task_id!r}")
    keep = {a.id for a in newest_rows}
    older = [r for r in session.execute(select(A.id, A.sample_index, A.attempt, A.status, A.error, A.finished_at)
                                        .where(A.run_id == run.id, A.task_id == task_id)
                                        .order_by(A.sample_index, A.attempt)) if r.id not in keep]
    return newest_rows, older


def load_attempt(session: Session, run: RolloutRun, attempt_id: int) -> RolloutAttempt:
    """Raises: NotFound (no such attempt in this run)."""
    a = session.scalars(select(A).where(A.id == attempt_id)
                        .options(selectinload(A.messages), selectinload(A.tool_calls))).first()
    if a is None or a.run_id != run.id:
        raise NotFound(f"run {run.id!r} has no attempt {attempt_id}")
    return a


def _arguments(raw: str) -> tuple[str, bool]:
    try:
        json.loads(raw)
    except ValueError:
        return raw, raw.strip() == ""
    return pretty_json(raw), True


def attempt_view(session: Session, a: RolloutAttempt) -> dict:
    """An attempt as a person reads it: system prompt, question, then each model turn with
    its tool calls (arguments, full result, images, audit rows), and the verdict."""
    audit = audit_rows(session, [c.request_id for c in a.tool_calls])
    calls = {(c.turn, c.call_id): c for c in a.tool_calls}
    used: set[int] = set()
    events: list[dict] = []

    def call_view(c) -> dict:
        used.add(c.id)
        parts, images = result_parts(c.result)
        args, args_ok = _arguments(c.arguments)
        return {"id": c.id, "turn": c.turn, "call_id": c.call_id, "name": c.name, "action": c.action,
                "arguments": args, "arguments_ok": args_ok, "params": pretty_json(c.params) if c.params else None,
                "code": c.code, "error": c.error, "failed": c.code not in (0,) or bool(c.error),
                "parts": parts, "images": images, "result_chars": c.result_chars,
                "prompt_truncated": c.prompt_truncated, "duration_ms": c.duration_ms,
                "request_id": c.request_id, "session_id": c.session_id, "audit": audit.get(c.request_id or "", [])}

    seen_user = False
    for m in a.messages:
        text, images, urls = message_parts(m.content)
        if m.role == "system":
            events.append({"kind": "system", "text": text})
        elif m.role == "user":
            events.append({"kind": "question" if not seen_user else "user", "text": text, "images": images,
                           "urls": urls})
            seen_user = True
        elif m.role == "assistant":
            turn_calls = []
            for item in m.tool_calls or []:
                c = calls.get((m.turn, item.get("id")))
                if c is not None:
                    turn_calls.append(call_view(c))
                else:  # asked for but never recorded (should not happen): show what the model sent
                    fn = item.get("function") or {}
                    turn_calls.append({"id": None, "name": fn.get("name"), "arguments": fn.get("arguments"),
                                       "arguments_ok": True, "failed": True, "error": "no tool call row recorded",
                                       "parts": [], "images": [], "audit": []})
            events.append({"kind": "assistant", "turn": m.turn, "text": text, "images": images, "calls": turn_calls,
                           "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                           "latency_ms": m.latency_ms, "finish_reason": m.finish_reason})
        elif m.role == "tool":
            if not any((c.turn, c.call_id) == (m.turn, m.tool_call_id) for c in a.tool_calls):
                events.append({"kind": "tool", "text": text, "tool_call_id": m.tool_call_id})
    stray = [call_view(c) for c in a.tool_calls if c.id not in used]
    if stray:
        events.append({"kind": "assistant", "turn": None, "text": "(tool calls not matched to a model turn)",
                       "images": [], "calls": stray})
    accepted = a.ground_truth if isinstance(a.ground_truth, list) else [a.ground_truth]
    return {"attempt": a, "events": events, "accepted": [x for x in accepted if x is not None],
            "score_details": pretty_json(a.score_details) if a.score_details else None,
            "passed": a.score is not None and a.score >= PASS_THRESHOLD, "tool_calls": len(a.tool_calls)}


def _task_scores(session: Session, run_id: str) -> dict[str, tuple[float, int, str]]:
    rows = session.execute(select(A.task_id, _score, func.count(), func.min(A.status))
                           .where(A.run_id == run_id, newest_attempt()).group_by(A.task_id))
    return {t: (float(s or 0.0), int(n), status) for t, s, n, status in rows}


COMPARE_SHOW = ("changed", "improved", "regressed", "same", "all")


def compare(session: Session, a: RolloutRun, b: RolloutRun, *, show: str = "changed", page: int = 1,
            per: int = 100) -> dict:
    """Per-task score changes from run ``a`` to run ``b`` (mean score of the newest
    attempts; a sample that did not complete counts 0), largest changes first.

    Raises:
        BadParameter: the runs are on different benchmarks, an unknown ``show``, a page past the last.
    """
    if a.benchmark_name != b.benchmark_name:
        raise BadParameter(f"run {a.id!r} is on benchmark {a.benchmark_name!r} and {b.id!r} on "
                           f"{b.benchmark_name!r}: compare two runs of one benchmark")
    if show not in COMPARE_SHOW:
        raise BadParameter(f"unknown show {show!r}; one of: {', '.join(COMPARE_SHOW)}")
    sa, sb = _task_scores(session, a.id), _task_scores(session, b.id)
    rows, counts = [], {"improved": 0, "regressed": 0, "same": 0, "only_a": 0, "only_b": 0}
    for task in sorted(set(sa) | set(sb)):
        x, y = sa.get(task), sb.get(task)
        if x is None or y is None:
            change = "only_a" if y is None else "only_b"
            delta = None
        else:
            delta = y[0] - x[0]
            change = "improved" if delta > 1e-9 else "regressed" if delta < -1e-9 else "same"
        counts[change] += 1
        rows.append({"task_id": task, "a": x, "b": y, "delta": delta, "change": change})
    wanted = {"changed": ("improved", "regressed", "only_a", "only_b"), "all": tuple(counts)}.get(show, (show,))
    rows = [r for r in rows if r["change"] in wanted]
    rows.sort(key=lambda r: (-(abs(r["delta"]) if r["delta"] is not None else 2), r["task_id"]))
    pages = max(1, -(-len(rows) // per))
    if page > pages:
        raise BadParameter(f"page {page} is past the last page ({pages})")
    return {"rows": rows[(page - 1) * per: page * per], "total": len(rows), "counts": counts, "page": page,
            "pages": pages, "show": show, "tasks_a": len(sa), "tasks_b": len(sb),
            "accuracy_a": sum(v[0] for v in sa.values()) / len(sa) if sa else None,
            "accuracy_b": sum(v[0] for v in sb.values()) / len(sb) if sb else None}


def same_benchmark_runs(session: Session, run: RolloutRun, limit: int = 50) -> list[RolloutRun]:
    """Other runs on the run's benchmark, newest first (candidates to compare with)."""
    return list(session.scalars(select(RolloutRun).where(RolloutRun.benchmark_name == run.benchmark_name,
                                                         RolloutRun.id != run.id)
                                .order_by(RolloutRun.created_at.desc()).limit(limit)))


def sample_of(session: Session, run_id: str, task_id: str, sample: int) -> RolloutAttempt | None:
    return session.scalars(select(A).where(A.run_id == run_id, A.task_id == task_id, A.sample_index == sample,
                                           newest_attempt()).options(selectinload(A.messages),
                                                             selectinload(A.tool_calls))).first()


def attempt_for_request(session: Session, request_id: str) -> list[Any]:
    """The rollout tool calls (with their attempt and run) that made this request."""
    from ...db.rollout import RolloutToolCall as C

    return list(session.execute(select(C.id, C.attempt_id, C.name, A.run_id, A.task_id, A.sample_index)
                                .join(A, A.id == C.attempt_id).where(C.request_id == request_id)))
