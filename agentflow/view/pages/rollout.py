"""A rollout run, its tasks (samples side by side), one trajectory, and two runs compared."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from sqlalchemy import select

from ...db.rollout import RolloutRun
from ..charts import bar_chart
from ..data import rollout as data
from ..db import get_session
from ..errors import BadParameter
from ..render import pretty_json
from . import dir_arg, int_arg, str_arg

bp = Blueprint("rollout", __name__)


@bp.get("/rollout/<path:run_id>")
def run(run_id: str):
    session = get_session()
    run = data.load_run(session, run_id)
    sort = str_arg("sort", "task")
    table = data.task_page(session, run, sort=sort, desc=dir_arg(), outcome=str_arg("outcome"), q=str_arg("q"),
                           page=int_arg("page", 1), per=int_arg("per", 50))
    scoring = data.chosen_scoring(session, run, int_arg("scoring", 0) or None)
    hist = data.score_histogram(session, run.id)
    chart = bar_chart([b["count"] for b in hist["bins"]], [f"{b['lo']:.1f}" for b in hist["bins"]],
                      title="newest attempts by score")
    return render_template("rollout_run.html", run=run, summary=data.run_summary(session, run, scoring), table=table,
                           scoring=scoring, scorings=data.scorings(session, run),
                           sources=data.synthesis_sources(session, run),
                           original_metric=(run.spec or {}).get("metric") if (run.spec or {}).get("scoring") else None,
                           hist=hist, chart=chart, n_samples=data.n_samples(run), sort_keys=data.SORT_KEYS,
                           outcomes=data.OUTCOME_FILTERS, per_page=data.PER_PAGE,
                           others=data.same_benchmark_runs(session, run),
                           config=pretty_json((run.spec or {}).get("config") or {}))


@bp.get("/rollout/<path:run_id>/tasks/<path:task_id>")
def task(run_id: str, task_id: str):
    """Every sample of one task side by side (its newest attempts), older attempts listed."""
    session = get_session()
    run = data.load_run(session, run_id)
    attempts, older = data.task_attempts(session, run, task_id)
    views = [data.attempt_view(session, a) for a in attempts]
    return render_template("rollout_task.html", run=run, task_id=task_id, views=views, older=older)


@bp.get("/rollout/<path:run_id>/attempts/<int:attempt_id>")
def attempt(run_id: str, attempt_id: int):
    session = get_session()
    run = data.load_run(session, run_id)
    a = data.load_attempt(session, run, attempt_id)
    return render_template("rollout_task.html", run=run, task_id=a.task_id, views=[data.attempt_view(session, a)],
                           older=[], single=True)


@bp.get("/compare")
def compare():
    """``?a=RUN&b=RUN``: per-task score changes; ``&task=ID`` adds both trajectories."""
    session = get_session()
    a_id, b_id = str_arg("a"), str_arg("b")
    runs = list(session.scalars(select(RolloutRun.id)
                                .order_by(RolloutRun.created_at.desc()).limit(200)))
    if not a_id or not b_id:
        if request.args and (a_id or b_id):
            raise BadParameter("choose two runs to compare (a and b)")
        return render_template("compare.html", runs=runs, a=None, b=None, result=None)
    a, b = data.load_run(session, a_id), data.load_run(session, b_id)
    result = data.compare(session, a, b, show=str_arg("show", "changed"), page=int_arg("page", 1))
    task_id = str_arg("task")
    pair = None
    if task_id:
        sample = int_arg("sample", 0, minimum=0)
        left, right = data.sample_of(session, a.id, task_id, sample), data.sample_of(session, b.id, task_id, sample)
        if left is None and right is None:
            raise BadParameter(f"neither run has sample {sample} of task {task_id!r}")
        pair = [(a, data.attempt_view(session, left) if left else None),
                (b, data.attempt_view(session, right) if right else None)]
    return render_template("compare.html", runs=runs, a=a, b=b, result=result, task_id=task_id, pair=pair,
                           shows=data.COMPARE_SHOW)
