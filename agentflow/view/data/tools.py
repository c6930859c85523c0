"""Per-tool statistics from the server's audit log (``tool_calls``): calls, failure rate,
latency percentiles and histogram, the slowest calls — over one run or a time range."""
from __future__ import annotations

import bisect
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...db.models import ToolCall
from ...db.rollout import RolloutAttempt, RolloutRun
from ...db.synthesis import SynthesisNode, SynthesisRun
from ..errors import BadParameter, NotFound

__all__ = ["HISTOGRAM_EDGES_MS", "MAX_CALLS", "audit_rows", "load_audit", "parse_time", "tool_stats"]

MAX_CALLS = 200_000
"""Statistics cover at most this many calls (the newest); the page says when it cut."""
HISTOGRAM_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000)
"""Upper edges of the latency bins (a last bin holds the slower calls)."""


def parse_time(value: str, name: str) -> dt.datetime | None:
    """``2025-01-31`` or ``2025-01-31T14:05`` (UTC) as a naive datetime; '' as None.

    Raises:
        BadParameter: anything else.
    """
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.rstrip("Z"))
    except ValueError:
        raise BadParameter(f"{name} must be a date or time like 2025-01-31 or 2025-01-31T14:05 (UTC), "
                           f"got {value!r}") from None
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def histogram(sorted_values: list[float]) -> list[int]:
    """Counts per bin of :data:`HISTOGRAM_EDGES_MS` (one more bin for the rest)."""
    counts = [0] * (len(HISTOGRAM_EDGES_MS) + 1)
    for v in sorted_values:
        counts[bisect.bisect_right(HISTOGRAM_EDGES_MS, v)] += 1
    return counts


def _scope(session: Session, run_id: str, since: dt.datetime | None, until: dt.datetime | None):
    where = []
    kind = None
    if run_id:
        if session.get(RolloutRun, run_id) is not None:
            kind = "rollout"
            where.append(ToolCall.trace_id.in_(select(RolloutAttempt.trace_id).where(RolloutAttempt.run_id == run_id)))
        elif session.get(SynthesisRun, run_id) is not None:
            kind = "synthesis"
            where.append(ToolCall.trace_id.in_(select(SynthesisNode.trace_id).where(
                SynthesisNode.run_id == run_id, SynthesisNode.trace_id.is_not(None)).distinct()))
        else:
            raise NotFound(f"no rollout or synthesis run {run_id!r} in this database")
    if since is not None:
        where.append(ToolCall.started_at >= since)
    if until is not None:
        where.append(ToolCall.started_at < until)
    return where, kind


def tool_stats(session: Session, *, run_id: str = "", since: dt.datetime | None = None,
               until: dt.datetime | None = None, action: str = "", slowest: int = 15) -> dict:
    """Statistics per tool (``action``) over the calls in scope, newest :data:`MAX_CALLS`.

    Raises:
        NotFound: ``run_id`` names no run.
        BadParameter: ``since`` is not before ``until``.
    """
    if since and until and since >= until:
        raise BadParameter("since must be before until")
    where, kind = _scope(session, run_id, since, until)
    rows = session.execute(select(ToolCall.action, ToolCall.duration_ms, ToolCall.code).where(*where)
                           .order_by(ToolCall.id.desc()).limit(MAX_CALLS + 1)).all()
    cut = len(rows) > MAX_CALLS
    by_action: dict[str, tuple[list[float], list[int]]] = {}
    for a, ms, code in rows[:MAX_CALLS]:
        durations, codes = by_action.setdefault(a, ([], []))
        durations.append(float(ms or 0.0))
        codes.append(code)
    tools = []
    for a, (durations, codes) in sorted(by_action.items()):
        durations.sort()
        failed = sum(1 for c in codes if c != 0)
        tools.append({"action": a, "calls": len(durations), "failed": failed, "failure_rate": failed / len(durations),
                      "p50": _percentile(durations, 0.5), "p90": _percentile(durations, 0.9),
                      "p99": _percentile(durations, 0.99), "max": durations[-1],
                      "mean": sum(durations) / len(durations), "histogram": histogram(durations)})
    if action and action not in by_action:
        raise NotFound(f"no calls of tool {action!r} in this scope")
    chosen = [*where, ToolCall.action == action] if action else where
    slow = list(session.scalars(select(ToolCall).where(*chosen).order_by(ToolCall.duration_ms.desc())
                                .limit(slowest)))
    return {"tools": tools, "calls": min(len(rows), MAX_CALLS), "cut": cut, "slowest": slow, "kind": kind,
            "selected": next((t for t in tools if t["action"] == action), None)}


def audit_rows(session: Session, request_ids: list[str]) -> dict[str, list[ToolCall]]:
    """The server's audit rows (``tool_calls``) of these request ids."""
    out: dict[str, list[ToolCall]] = {}
    ids = [r for r in request_ids if r]
    for i in range(0, len(ids), 500):
        for row in session.scalars(select(ToolCall).where(ToolCall.request_id.in_(ids[i:i + 500]))
                                   .order_by(ToolCall.id)):
            out.setdefault(row.request_id, []).append(row)
    return out


def load_audit(session: Session, audit_id: int) -> ToolCall:
    """Raises: NotFound."""
    row = session.get(ToolCall, audit_id)
    if row is None:
        raise NotFound(f"no audit row {audit_id} in tool_calls")
    return row
