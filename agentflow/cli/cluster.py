"""``agentflow cluster status``: the nodes sharing this database, their sessions and load."""
from __future__ import annotations

import argparse
import json

from ..config import load_server_config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cluster", help="the sandbox nodes sharing one database")
    csub = parser.add_subparsers(dest="cluster_command", metavar="ACTION")
    csub.required = True
    p = csub.add_parser("status", help="nodes, their live sessions, load and lease age")
    p.add_argument("--config", help="server config file (for its database_url / data_dir)")
    p.add_argument("--database-url", help="database URL (default: AGENTFLOW_DATABASE_URL or the data dir's sqlite)")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p.set_defaults(func=_status)


def node_rows(url: str) -> list[dict]:
    """One dict per registered node: its row, live sessions, calls in the last minute
    and how old its lease renewal is."""
    import datetime as dt

    from sqlalchemy import func, select

    from ..db import isoformat, make_engine, make_session_factory, utcnow
    from ..db.models import SESSION_ACTIVE, SESSION_STARTING, Node, SandboxSession, ToolCall

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            now = utcnow()
            sessions = dict(s.execute(select(SandboxSession.node_id, func.count()).where(
                SandboxSession.status.in_((SESSION_STARTING, SESSION_ACTIVE))).group_by(SandboxSession.node_id)).all())
            calls = dict(s.execute(select(ToolCall.node_id, func.count()).where(
                ToolCall.started_at >= now - dt.timedelta(seconds=60)).group_by(ToolCall.node_id)).all())
            nodes = s.scalars(select(Node).order_by(Node.node_id)).all()
            return [{
                "node_id": n.node_id, "url": n.url, "status": _status_of(n, now), "version": n.version,
                "live_sessions": sessions.get(n.node_id, 0), "max_sessions": n.capacity or None,
                "calls_last_minute": calls.get(n.node_id, 0),
                "lease_age_s": round((now - n.heartbeat_at).total_seconds(), 1),
                "lease_left_s": round((n.lease_expires_at - now).total_seconds(), 1),
                "started_at": isoformat(n.started_at), "lost_at": isoformat(n.lost_at),
            } for n in nodes]
    finally:
        engine.dispose()


def _status_of(node, now) -> str:
    from ..db.models import NODE_LIVE

    if node.status == NODE_LIVE and node.lease_expires_at < now:
        return "expired"  # not declared lost yet: the next heartbeat of any node does it
    return node.status


def _status(args: argparse.Namespace) -> int:
    from ..db import upgrade

    cfg = load_server_config(args.config)
    url = args.database_url or cfg.effective_database_url
    upgrade(url, lock_dir=cfg.data_dir if url.startswith("sqlite") else None)
    rows = node_rows(url)
    if args.json:
        print(json.dumps({"nodes": rows}, indent=2))
        return 0
    if not rows:
        print("no nodes registered in this database (start one with: agentflow serve)")
        return 0
    header = ("NODE", "STATUS", "SESSIONS", "CALLS/MIN", "LEASE AGE", "URL")
    table = [header] + [(r["node_id"], r["status"],
                         f"{r['live_sessions']}/{r['max_sessions']}" if r["max_sessions"] else str(r["live_sessions"]),
                         str(r["calls_last_minute"]), f"{r['lease_age_s']:.1f}s", r["url"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
