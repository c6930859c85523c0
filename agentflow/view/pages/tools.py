"""Per-tool statistics, and one audit row of the server's ``tool_calls`` with what made it."""
from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from ...db.rollout import RolloutRun
from ...db.synthesis import SynthesisRun
from ..charts import bar_chart, latency_labels
from ..data import rollout as rollout_data
from ..data import synthesis as synthesis_data
from ..data import tools as data
from ..db import get_session
from ..render import pretty_json, result_parts
from . import str_arg

bp = Blueprint("tools", __name__)


@bp.get("/tools")
def index():
    """``?run=ID`` or ``?since=…&until=…`` (UTC), optionally ``&action=TOOL``."""
    session = get_session()
    run_id, action = str_arg("run"), str_arg("action")
    since, until = data.parse_time(str_arg("since"), "since"), data.parse_time(str_arg("until"), "until")
    stats = data.tool_stats(session, run_id=run_id, since=since, until=until, action=action)
    labels = latency_labels()
    charts = {t["action"]: bar_chart(t["histogram"], labels, title=f"{t['action']} latency", width=260, height=70,
                                     label_every=100) for t in stats["tools"]}
    big = bar_chart(stats["selected"]["histogram"], labels, title=f"{action} latency", width=760, height=200,
                    label_every=2) if stats["selected"] else None
    recent = [("rollout", r) for r in session.scalars(select(RolloutRun.id)
                                                      .order_by(RolloutRun.created_at.desc()).limit(100))]
    recent += [("synthesis", r) for r in session.scalars(select(SynthesisRun.id)
                                                         .order_by(SynthesisRun.created_at.desc()).limit(100))]
    return render_template("tools.html", stats=stats, charts=charts, big=big, run_id=run_id, action=action,
                           since=str_arg("since"), until=str_arg("until"), recent=recent)


@bp.get("/audit/<int:audit_id>")
def audit(audit_id: int):
    session = get_session()
    row = data.load_audit(session, audit_id)
    parts, images = result_parts(row.result)
    made_by = rollout_data.attempt_for_request(session, row.request_id) if row.request_id else []
    nodes = synthesis_data.node_for_request(session, row.request_id) if row.request_id else []
    return render_template("audit.html", row=row, parts=parts, result_images=images, params=pretty_json(row.params or {}),
                           made_by=made_by, nodes=nodes)
