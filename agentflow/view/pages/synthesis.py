"""A synthesis run (report, seeds, QA candidates) and one seed's exploration tree."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from ..data import synthesis as data
from ..db import get_session
from ..render import pretty_json
from . import int_arg, str_arg

bp = Blueprint("synthesis", __name__)


@bp.get("/synthesis/<path:run_id>")
def run(run_id: str):
    session = get_session()
    run = data.load_run(session, run_id)
    return render_template("synthesis_run.html", run=run, report=data.run_report(session, run),
                           seeds=data.seed_rows(session, run),
                           qa=data.qa_page(session, run, status=str_arg("qa"), page=int_arg("page", 1)),
                           qa_statuses=data.QA_STATUSES, config=pretty_json((run.spec or {}).get("config") or {}))


@bp.get("/synthesis/<path:run_id>/seeds/<int:seed_index>")
def seed(run_id: str, seed_index: int):
    session = get_session()
    run = data.load_run(session, run_id)
    seed = data.load_seed(session, run, seed_index)
    focus = int_arg("path", 0) if request.args.get("path") else None
    return render_template("synthesis_seed.html", run=run, view=data.seed_view(session, run, seed, focus))
