"""``agentflow runs list|show|export``: read stored rollout runs."""
from __future__ import annotations

import argparse
import json

from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("runs", help="list, show and export stored rollout runs")
    rsub = parser.add_subparsers(dest="runs_command", metavar="ACTION")
    rsub.required = True
    p = rsub.add_parser("list", help="recent runs")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_list)
    p = rsub.add_parser("show", help="a run's summary and tasks, or one task's trajectory")
    p.add_argument("run_id")
    p.add_argument("--task", help="print this task's trajectory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_show)
    p = rsub.add_parser("export", help="(re)write results.jsonl, trajectories.jsonl and summary.json from the database")
    p.add_argument("run_id")
    p.add_argument("--output-dir", help="default: the run's output_dir")
    p.set_defaults(func=_export)
    for action in rsub.choices.values():
        action.add_argument("--database-url", help="database (default: AGENTFLOW_DATABASE_URL or sqlite in "
                                                   "AGENTFLOW_HOME)")


def _session(args):
    from ..db import make_engine, make_session_factory, upgrade
    from ..rollout.runner import database_url

    url, lock_dir = database_url(args.database_url)
    upgrade(url, lock_dir=lock_dir if url.startswith("sqlite") else None)
    engine = make_engine(url)
    return engine, make_session_factory(engine)()


def _list(args: argparse.Namespace) -> int:
    from ..rollout.store import list_runs

    engine, session = _session(args)
    with session:
        runs = list_runs(session, args.limit)
        if not runs:
            print("no rollout runs")
        for run in runs:
            s = run.summary or {}
            acc = s.get("accuracy")
            print(f"{run.id:<44} {run.status:<10} {run.benchmark_name:<16} {run.model_name:<24} "
                  f"done {s.get('completed', 0) + s.get('failed', 0)}/{run.total_tasks:<5} "
                  f"acc {'-' if acc is None else f'{acc:.4f}'}  {run.created_at:%Y-%m-%d %H:%M}")
    engine.dispose()
    return 0


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ..db.rollout import RolloutAttempt
    from ..rollout.store import get_run, latest_attempts, summarize, trajectory_row
    from .rollout import format_summary

    engine, session = _session(args)
    with session:
        run = get_run(session, args.run_id)
        if run is None:
            raise CommandError(f"no rollout run {args.run_id!r}")
        newest = latest_attempts(session, args.run_id)
        if args.task:
            rows = [a for (task_id, _), a in sorted(newest.items()) if task_id == args.task]
            if not rows:
                raise CommandError(f"run {args.run_id!r} has no finished task {args.task!r}")
            for a in rows:
                print(json.dumps(trajectory_row(session.get(RolloutAttempt, a.id)), indent=2, ensure_ascii=False))
            return 0
        summary = summarize(run, list(newest.values()))
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
            return 0
        print(format_summary(summary))
        for a in session.scalars(select(RolloutAttempt).where(RolloutAttempt.id.in_([a.id for a in newest.values()]))
                                 .order_by(RolloutAttempt.id)):
            score = "-" if a.score is None else f"{a.score:.2f}"
            print(f"  {a.task_id:<24} #{a.sample_index} {a.status:<11} score {score:<5} turns {a.turns:<3} "
                  f"{(a.prediction or a.error or '')[:60]!r}")
    engine.dispose()
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..rollout.store import export_run

    engine, session = _session(args)
    with session:
        try:
            summary = export_run(session, args.run_id, args.output_dir)
        except LookupError as err:
            raise CommandError(str(err)) from err
    engine.dispose()
    for key in ("results_file", "trajectories_file", "summary_file"):
        print(f"wrote {summary[key]}")
    return 0
