"""``agentflow runs list|show|export``: read stored rollout and synthesis runs.

A ``running`` run whose process is gone (dead pid on this host, or a heartbeat older
than ``agentflow.runfiles.HEARTBEAT_STALE_S``) is shown as ``interrupted``, with the
command that resumes it. ``runs show`` of a run that processes share says how its work
claims stand (pending, claimed and by how many processes, done)."""
from __future__ import annotations

import argparse
import json

from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("runs", help="list, show and export stored rollout and synthesis runs")
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


def _claims_line(session, kind: str, run_id: str) -> str | None:
    """``claims      2 pending, 3 claimed by 2 process(es), 11 done`` (None for a run
    without work claims, e.g. one from before they existed)."""
    from ..db import claims

    p = claims.progress(session, kind, run_id)
    if not (p["pending"] or p["claimed"] or p["done"]):
        return None
    return (f"  claims      {p['pending']} pending, {p['claimed']} claimed by {len(p['owners'])} process(es), "
            f"{p['done']} done")


def _resume_hint(kind: str, run_id: str) -> str:
    command = "rollout" if kind == "rollout" else "synthesize"
    return f"agentflow {command} --run-id {run_id} --resume"


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from ..db.synthesis import QA_ACCEPTED, SEED_DONE, SynthesisQA, SynthesisRun, SynthesisSeed
    from ..rollout.store import list_runs, progress_counts
    from ..runfiles import effective_status

    engine, session = _session(args)
    rows = []
    with session:
        for run in list_runs(session, args.limit):
            counts = progress_counts(session, run.id)  # live: a run still going has no summary yet
            acc = (run.summary or {}).get("accuracy")
            rows.append((run.created_at, "rollout", run.id, effective_status(run), run.benchmark_name, run.model_name,
                         f"done {sum(counts.values())}/{run.total_tasks}",
                         f"acc {'-' if acc is None else f'{acc:.4f}'}"))
        for run in session.scalars(select(SynthesisRun).order_by(SynthesisRun.created_at.desc()).limit(args.limit)):
            done = session.scalar(select(func.count()).where(SynthesisSeed.run_id == run.id,
                                                             SynthesisSeed.status == SEED_DONE)) or 0
            qa = session.scalar(select(func.count()).where(SynthesisQA.run_id == run.id,
                                                           SynthesisQA.status == QA_ACCEPTED)) or 0
            rows.append((run.created_at, "synthesis", run.id, effective_status(run), "-", run.model_name,
                         f"done {done}/{run.total_seeds}", f"qa {qa}"))
        rows.sort(key=lambda r: r[0], reverse=True)
        rows = rows[: args.limit]
        if not rows:
            print("no runs")
        else:
            print(f"{'KIND':<9} {'RUN':<44} {'STATUS':<11} {'BENCHMARK':<12} {'MODEL':<24} {'PROGRESS':<13} "
                  f"{'RESULT':<11} STARTED")
        for created, kind, run_id, status, bench, model, progress, result in rows:
            print(f"{kind:<9} {run_id:<44} {status:<11} {bench:<12} {model:<24} {progress:<13} {result:<11} "
                  f"{created:%Y-%m-%d %H:%M}")
        for created, kind, run_id, status, *_ in rows:
            if status == "interrupted":
                print(f"{run_id} was interrupted (its process is gone); resume: {_resume_hint(kind, run_id)}")
    engine.dispose()
    return 0


def _synthesis_run(session, run_id: str):
    from ..synthesis.store import get_run

    return get_run(session, run_id)


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ..db.rollout import RolloutAttempt
    from ..rollout.store import get_run, latest_attempts, summarize, trajectory_row
    from .rollout import format_summary

    engine, session = _session(args)
    with session:
        run = get_run(session, args.run_id)
        if run is None:
            if _synthesis_run(session, args.run_id) is not None:
                return _show_synthesis(session, args)
            raise CommandError(f"no rollout or synthesis run {args.run_id!r}")
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
        line = _claims_line(session, "rollout", run.id)
        if line and summary["status"] != "success":
            print(line)
        if summary["status"] == "interrupted":
            print(f"  interrupted: the process that ran it (pid {run.pid} on {run.host}) is gone; resume: "
                  f"{_resume_hint('rollout', run.id)}")
        for a in session.scalars(select(RolloutAttempt).where(RolloutAttempt.id.in_([a.id for a in newest.values()]))
                                 .order_by(RolloutAttempt.id)):
            score = "-" if a.score is None else f"{a.score:.2f}"
            print(f"  {a.task_id:<24} #{a.sample_index} {a.status:<11} score {score:<5} turns {a.turns:<3} "
                  f"{(a.prediction or a.error or '')[:60]!r}")
    engine.dispose()
    return 0


def _show_synthesis(session, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ..db.synthesis import SynthesisSeed
    from ..synthesis.store import report
    from .synthesize import format_report

    run = _synthesis_run(session, args.run_id)
    if args.task:
        raise CommandError(f"{args.run_id!r} is a synthesis run: --task is for rollout runs")
    rep = {**(run.report or {}), **report(session, run)}
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
        return 0
    print(format_report(rep))
    line = _claims_line(session, "synthesis", run.id)
    if line and rep["status"] != "success":
        print(line)
    if rep["status"] == "interrupted":
        print(f"  interrupted: the process that ran it (pid {run.pid} on {run.host}) is gone; resume: "
              f"{_resume_hint('synthesis', run.id)}")
    for seed in session.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run.id)
                                .order_by(SynthesisSeed.seed_index)):
        print(f"  seed {seed.seed_index:<4} {seed.status:<9} {(seed.error or seed.content or '')[:70]!r}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..rollout.store import export_run
    from ..synthesis.store import export_run as export_synthesis

    engine, session = _session(args)
    with session:
        if _synthesis_run(session, args.run_id) is not None:
            stored = _synthesis_run(session, args.run_id).report or {}
            rep = export_synthesis(session, args.run_id, args.output_dir,
                                   extra={"throughput": stored.get("throughput")} if stored.get("throughput") else None)
            keys = ("qa_file", "trajectories_file", "report_file")
            summary = rep
        else:
            try:
                summary = export_run(session, args.run_id, args.output_dir)
            except LookupError as err:
                raise CommandError(f"no rollout or synthesis run {args.run_id!r} in this database") from err
            keys = ("results_file", "trajectories_file", "summary_file")
    engine.dispose()
    for key in keys:
        if summary.get(key):
            print(f"wrote {summary[key]}")
    return 0
