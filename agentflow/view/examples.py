"""The SQL page's example queries: the README's and the database page's, and the ones
``agentflow demo`` prints (:func:`agentflow.demo.queries`), filled in with the newest
runs of this database."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.rollout import RolloutRun
from ..db.synthesis import SynthesisRun

__all__ = ["GENERAL", "example_queries"]

GENERAL = [
    {"title": "tool calls per tool (the README's query)",
     "sql": "SELECT action, count(*) FROM tool_calls GROUP BY 1"},
    {"title": "slowest tools",
     "sql": ("SELECT action, COUNT(*) AS calls, ROUND(AVG(duration_ms), 1) AS avg_ms, MAX(duration_ms) AS max_ms\n"
             "FROM tool_calls GROUP BY action ORDER BY avg_ms DESC LIMIT 10")},
    {"title": "failure rate per tool",
     "sql": ("SELECT action, COUNT(*) AS calls,\n"
             "       ROUND(100.0 * SUM(CASE WHEN code <> 0 THEN 1 ELSE 0 END) / COUNT(*), 1) AS failed_pct\n"
             "FROM tool_calls GROUP BY action ORDER BY failed_pct DESC")},
    {"title": "accuracy and tokens per run",
     "sql": ("SELECT run_id, count(*) AS samples, avg(coalesce(score, 0)) AS accuracy, sum(total_tokens) AS tokens\n"
             "FROM rollout_attempts GROUP BY run_id")},
]
"""Queries of README.md and docs/database.md / docs/rollout.md, in both dialects."""


def example_queries(session: Session) -> list[dict[str, str]]:
    """:data:`GENERAL`, then the demo's queries over the newest rollout and synthesis runs
    (sqlite dialect: they use ``json_extract``; on PostgreSQL only the others are offered)."""
    from ..demo import queries

    out = list(GENERAL)
    rollout_id = session.scalar(select(RolloutRun.id).order_by(RolloutRun.created_at.desc()).limit(1))
    synth_id = session.scalar(select(SynthesisRun.id).order_by(SynthesisRun.created_at.desc()).limit(1))
    if rollout_id or synth_id:
        sqlite = session.get_bind().dialect.name == "sqlite"
        for q in queries(rollout_id or "", synth_id or ""):
            if (rollout_id if "rollout_attempts" in q["sql"] else synth_id) and (sqlite or "json_" not in q["sql"]):
                out.append({"title": q["title"], "sql": q["sql"].rstrip(";")})
    return out
