"""The runs list, a run id's redirect to its page, and the JSON the pages poll."""
from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, request, url_for

from ...db.rollout import RolloutRun
from ...db.synthesis import SynthesisRun
from ..data import runs as data
from ..db import get_session
from ..errors import NotFound
from . import int_arg, str_arg

bp = Blueprint("runs", __name__)


@bp.get("/")
def home():
    return redirect(url_for("runs.index"))


@bp.get("/runs")
def index():
    session = get_session()
    kind, status, q, benchmark = str_arg("kind"), str_arg("status"), str_arg("q"), str_arg("benchmark")
    page = int_arg("page", 1)
    rows, more = data.list_runs(session, kind=kind, status=status, q=q, benchmark=benchmark, page=page)
    return render_template("runs.html", rows=rows, more=more, page=page, kind=kind, status=status, q=q,
                           benchmark=benchmark, kinds=data.KINDS, statuses=data.STATUSES,
                           benchmarks=data.benchmarks(session))


@bp.get("/runs/<path:run_id>")
def run(run_id: str):
    """Either kind of run by id (a link that need not know the kind)."""
    session = get_session()
    if session.get(RolloutRun, run_id) is not None:
        return redirect(url_for("rollout.run", run_id=run_id))
    if session.get(SynthesisRun, run_id) is not None:
        return redirect(url_for("synthesis.run", run_id=run_id))
    raise NotFound(f"no rollout or synthesis run {run_id!r} in this database")


@bp.get("/api/progress")
def progress():
    """``?run=ID&run=ID``: status and counts of these runs, for the pages' live progress."""
    ids = [r for r in request.args.getlist("run") if r][:50]
    return jsonify({"runs": data.progress(get_session(), ids)})


@bp.get("/api/health")
def health():
    from ..db import kind

    return jsonify({"ok": True, "database": kind(), "read_only": True})
