"""``agentflow runs list|show|export|rescore``: read stored rollout and synthesis runs,
and score a rollout run's stored predictions again.

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
    p.add_argument("--scoring", type=int, metavar="ID",
                   help="show this rescoring (default: the newest; the run's own scores when it has none)")
    p.set_defaults(func=_show)
    p = rsub.add_parser("rescore", help="score a rollout run's stored predictions again (no agent model call); "
                                        "the new scoring is kept beside the older ones")
    p.add_argument("run_id")
    p.add_argument("--metric", required=True,
                   help="exact_match, f1, contains_answer, numeric_match or llm_judge (or an alias: em, f1_score, "
                        "judge)")
    p.add_argument("--judge-model", help="llm_judge: the judge's model (default: the run's evaluator_model_name, "
                                         "else its model_name)")
    p.add_argument("--judge-base-url", help="llm_judge: the judge's endpoint (default: the run's evaluator_base_url, "
                                            "else its base_url)")
    p.add_argument("--judge-api-key", help="llm_judge: the judge's API key (default: OPENAI_API_KEY)")
    p.add_argument("--cache", choices=["read_write", "read_only", "off"],
                   help="llm_judge: the model-call cache for the judge's calls (default: read_write, or "
                        "AGENTFLOW_MODEL_CACHE); read_only makes no call (a miss leaves that attempt unscored, "
                        "with the reason)")
    p.add_argument("--json", action="store_true", help="print the new summary as JSON")
    p.set_defaults(func=_rescore)
    p = rsub.add_parser("export", help="(re)write results.jsonl, trajectories.jsonl and summary.json from the database")
    p.add_argument("run_id")
    p.add_argument("--output-dir", help="default: the run's output_dir")
    p.add_argument("--format", dest="fmt", metavar="FORMAT",
                   help="write training data instead: openai-chat, sharegpt or sft-jsonl (one record per kept "
                        "trajectory; see docs/rollout.md)")
    p.add_argument("-o", "--output", help="--format: the JSONL file (default: <run output_dir>/train-<format>.jsonl); "
                                          "--as-benchmark: the benchmark file (default: <run output_dir>/"
                                          "benchmark.jsonl; - for stdout)")
    p.add_argument("--min-score", help="--format: keep trajectories scoring at least this (0..1)")
    p.add_argument("--outcome", help="--format: keep trajectories with this outcome (e.g. completed)")
    p.add_argument("--dedup", action="store_true",
                   help="--format: drop a trajectory equal to an earlier one (tool call ids aside)")
    p.add_argument("--scoring", type=int, metavar="ID",
                   help="--format: the scores of this rescoring (default: the newest, else the run's own)")
    p.add_argument("--as-benchmark", action="store_true",
                   help="a synthesis run: write its accepted QA pairs as a rollout benchmark (JSONL), each task "
                        "linked to its QA pair so a rollout over it writes back the pair's pass@k")
    _solved_flags(p, "--as-benchmark: ")
    p.set_defaults(func=_export)
    p = rsub.add_parser("qa", help="a synthesis run's accepted QA pairs with their difficulty (pass@k from the "
                                   "rollouts that ran them as a benchmark)")
    p.add_argument("run_id")
    _solved_flags(p, "")
    p.add_argument("--json", action="store_true", help="print JSON lines (one per QA pair)")
    p.set_defaults(func=_qa)
    for action in rsub.choices.values():
        action.add_argument("--database-url", help="database (default: AGENTFLOW_DATABASE_URL or sqlite in "
                                                   "AGENTFLOW_HOME)")


def _solved_flags(p, prefix: str) -> None:
    p.add_argument("--solved", metavar="N[-M]",
                   help=prefix + "keep QA pairs solved N to M times (e.g. 1-3) by a rollout that ran them")
    p.add_argument("--of", metavar="K", help=prefix + "... in exactly K scored samples (the rollout's n_samples)")
    p.add_argument("--rollout", metavar="RUN", help=prefix + "count only this rollout run")
    p.add_argument("--model", help=prefix + "count only rollout runs of this model")


def _solved_filter(args):
    from ..synthesis.benchmark import BadSolvedFilter, parse_solved

    try:
        return parse_solved(args.solved, args.of, rollout=args.rollout, model=args.model)
    except BadSolvedFilter as err:
        raise CommandError(str(err)) from err


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
    from ..rollout.rescore import UnknownScoring, choose_scoring
    from ..rollout.store import AttemptScores, get_run, latest_attempts, summarize, trajectory_row
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
        try:
            scores = AttemptScores(choose_scoring(session, run.id, args.scoring))
        except UnknownScoring as err:
            raise CommandError(str(err)) from err
        summary = summarize(run, list(newest.values()), scores)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
            return 0
        print(format_summary(summary))
        print(_scorings_line(session, run, scores))
        line = _claims_line(session, "rollout", run.id)
        if line and summary["status"] != "success":
            print(line)
        if summary["status"] == "interrupted":
            print(f"  interrupted: the process that ran it (pid {run.pid} on {run.host}) is gone; resume: "
                  f"{_resume_hint('rollout', run.id)}")
        for a in session.scalars(select(RolloutAttempt).where(RolloutAttempt.id.in_([a.id for a in newest.values()]))
                                 .order_by(RolloutAttempt.id)):
            value = scores.score(a)
            score = "-" if value is None else f"{value:.2f}"
            print(f"  {a.task_id:<24} #{a.sample_index} {a.status:<11} score {score:<5} turns {a.turns:<3} "
                  f"{(a.prediction or a.error or '')[:60]!r}")
    engine.dispose()
    return 0


def _scorings_line(session, run, scores) -> str:
    """``scoring     #2 f1 (2026-12-01T18:02:11Z), of 2; original exact_match`` or, for a
    run never rescored, where its scores come from."""
    from ..rollout.rescore import list_scorings

    original = (run.spec or {}).get("metric") or "none"
    chosen = scores.describe()
    if chosen is None:
        return f"  scoring     as run ({original}); rescore: agentflow runs rescore {run.id} --metric METRIC"
    judge = f", judge {chosen['judge_model']}" if chosen["judge_model"] else ""
    others = ", ".join(f"#{s.id} {s.metric}" for s in list_scorings(session, run.id))
    return (f"  scoring     #{chosen['id']} {chosen['metric']}{judge} ({chosen['created_at']}); scorings {others}; "
            f"as run {original}")


def _judge(args: argparse.Namespace, run) -> "ChatModel":
    """The judge for ``llm_judge``: flags first, then the run's stored config (its
    evaluator, else its own model); the stored API keys are masked, so the key comes from
    the flag or ``OPENAI_API_KEY``."""
    from ..llm import ChatModel

    config = (run.spec or {}).get("config") or {}
    model = args.judge_model or config.get("evaluator_model_name") or config.get("model_name") or run.model_name
    base_url = args.judge_base_url or config.get("evaluator_base_url") or config.get("base_url")
    return ChatModel(model, api_key=args.judge_api_key, base_url=base_url,
                     max_retries=int(config.get("evaluator_max_retries") or 3),
                     temperature=config.get("evaluator_temperature"),
                     extra_params=config.get("evaluator_extra_params") or None)


def _rescore(args: argparse.Namespace) -> int:
    from ..rollout.rescore import UnknownMetric, UnknownRun, canonical_metric, rescore_run
    from ..rollout.store import AttemptScores, get_run, latest_attempts, summarize
    from .rollout import format_summary

    try:
        metric = canonical_metric(args.metric)
    except UnknownMetric as err:
        raise CommandError(str(err)) from err
    engine, session = _session(args)
    with session:
        run = get_run(session, args.run_id)
        if run is None:
            if _synthesis_run(session, args.run_id) is not None:
                raise CommandError(f"{args.run_id!r} is a synthesis run: rescore is for rollout runs")
            raise CommandError(f"no rollout run {args.run_id!r} in this database")
        judge = _judge(args, run) if metric == "llm_judge" else None
        cache = None
        if judge is not None:  # the judge's calls go through the model-call cache, as in a run
            from ..config import ConfigError
            from ..llm.cache import CachedChatModel, ModelCache, default_mode
            from ..rollout.runner import database_url

            try:
                mode = args.cache or default_mode()
            except ConfigError as err:
                raise CommandError(str(err)) from err
            cache = ModelCache.open(database_url(args.database_url)[0], mode, run_id=run.id)
            judge = CachedChatModel(judge, cache, kind="judge")
        try:
            scoring = rescore_run(session, run.id, metric, judge=judge)
        except UnknownRun as err:
            raise CommandError(str(err)) from err
        finally:
            if cache is not None:
                cache.close()
        session.commit()
        summary = summarize(run, list(latest_attempts(session, run.id).values()), AttemptScores(scoring))
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(f"scoring #{scoring.id} of run {run.id}: {len(scoring.scores)} attempts scored with {metric}"
                  + (f" (judge {scoring.judge_model})" if scoring.judge_model else ""))
            print(format_summary(summary))
    engine.dispose()
    return 0


def _difficulty_line(session, run_id: str, accepted: int) -> str:
    """``difficulty  3 of 4 accepted QA run as a benchmark by 1 rollout run(s); ...``"""
    from sqlalchemy import distinct, func, select

    from ..db.synthesis import QA_ACCEPTED, SynthesisQA, SynthesisQAAttempt

    linked = session.execute(
        select(func.count(distinct(SynthesisQAAttempt.qa_id)), func.count(distinct(SynthesisQAAttempt.rollout_run_id)))
        .join(SynthesisQA, SynthesisQA.id == SynthesisQAAttempt.qa_id)
        .where(SynthesisQA.run_id == run_id, SynthesisQA.status == QA_ACCEPTED)).one()
    if not linked[0]:
        return (f"  difficulty  not run as a benchmark yet: agentflow runs export {run_id} --as-benchmark, then "
                f"agentflow rollout over the file with n_samples")
    return (f"  difficulty  {linked[0]} of {accepted} accepted QA run as a benchmark by {linked[1]} rollout run(s); "
            f"see agentflow runs qa {run_id} [--solved N-M --of K]")


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
    print(_difficulty_line(session, run.id, rep["qa"]["accepted"]))
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


def _export_training(args: argparse.Namespace) -> int:
    from ..rollout.rescore import UnknownRun, UnknownScoring
    from ..rollout.training import BadFilter, ExportFilter, UnknownFormat, check_format, export_training, \
        parse_min_score

    try:  # bad flags fail before the database is opened
        check_format(args.fmt)
        flt = ExportFilter(min_score=parse_min_score(args.min_score), outcome=args.outcome, dedup=args.dedup)
        flt.check()
    except (UnknownFormat, BadFilter) as err:
        raise CommandError(str(err)) from err
    engine, session = _session(args)
    with session:
        if get_rollout_run(session, args.run_id) is None and _synthesis_run(session, args.run_id) is not None:
            raise CommandError(f"{args.run_id!r} is a synthesis run: --format exports rollout runs")
        try:
            written = export_training(session, args.run_id, args.fmt, args.output, flt, scoring_id=args.scoring)
        except (UnknownRun, UnknownScoring) as err:
            raise CommandError(str(err)) from err
    engine.dispose()
    print(f"wrote {written['records']} {written['format']} records to {written['file']}")
    if written["provenance_file"]:
        print(f"wrote their provenance to {written['provenance_file']}")
    return 0


def get_rollout_run(session, run_id: str):
    from ..rollout.store import get_run

    return get_run(session, run_id)


def _export(args: argparse.Namespace) -> int:
    from ..rollout.store import export_run
    from ..synthesis.store import export_run as export_synthesis

    if args.fmt is not None and args.as_benchmark:
        raise CommandError("--format (a training export of a rollout run) and --as-benchmark (a synthesis run's QA "
                           "as a benchmark) exclude each other")
    if args.as_benchmark:
        return _export_benchmark(args)
    benchmark_only = [flag for flag, value in (("--solved", args.solved), ("--of", args.of),
                                               ("--rollout", args.rollout), ("--model", args.model))
                      if value is not None]
    if benchmark_only:
        raise CommandError(f"{', '.join(benchmark_only)} only apply with --as-benchmark")
    if args.fmt is not None:
        return _export_training(args)
    training_only = [flag for flag, value in (("--output", args.output), ("--min-score", args.min_score),
                                              ("--outcome", args.outcome), ("--dedup", args.dedup),
                                              ("--scoring", args.scoring)) if value not in (None, False)]
    if training_only:
        raise CommandError(f"{', '.join(training_only)} only apply with --format (a training export)")
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


def _export_benchmark(args: argparse.Namespace) -> int:
    from ..synthesis.benchmark import export_benchmark, jsonl_line

    wrong = [flag for flag, value in (("--min-score", args.min_score), ("--outcome", args.outcome),
                                      ("--dedup", args.dedup), ("--scoring", args.scoring),
                                      ("--output-dir", args.output_dir)) if value not in (None, False)]
    if wrong:
        raise CommandError(f"{', '.join(wrong)} do not apply with --as-benchmark (use -o FILE)")
    flt = _solved_filter(args)  # bad flags fail before the database is opened
    engine, session = _session(args)
    with session:
        _require_synthesis_run(session, args.run_id, "--as-benchmark exports a synthesis run's QA")
        written = export_benchmark(session, args.run_id, args.output, flt)
    engine.dispose()
    if written["file"] is None:
        for line in written["lines"]:
            print(jsonl_line(line))
    else:
        print(f"wrote {written['tasks']} tasks to {written['file']}")
        print(f"run them: agentflow rollout --config CONFIG --data-path {written['file']} --n-samples 8; "
              f"then: agentflow runs qa {args.run_id}")
    return 0


def _require_synthesis_run(session, run_id: str, why: str) -> None:
    if _synthesis_run(session, run_id) is None:
        if get_rollout_run(session, run_id) is not None:
            raise CommandError(f"{run_id!r} is a rollout run: {why}")
        raise CommandError(f"no synthesis run {run_id!r} in this database")


def _qa(args: argparse.Namespace) -> int:
    from ..synthesis.benchmark import select_qa

    flt = _solved_filter(args)
    engine, session = _session(args)
    with session:
        _require_synthesis_run(session, args.run_id, "runs qa lists a synthesis run's QA pairs")
        rows = select_qa(session, args.run_id, flt)
        for qa, seed, diffs in rows:
            if args.json:
                print(json.dumps({"id": f"qa-{qa.id}", "qa_id": qa.id, "seed_index": seed.seed_index,
                                  "question": qa.question, "answer": qa.answer,
                                  "difficulty": [d.as_dict() for d in diffs]}, ensure_ascii=False, default=str))
                continue
            runs = "; ".join(f"solved {d.solved}/{d.samples} by {d.model_name} ({d.rollout_run_id})"
                             + (f" pass@1 {d.pass_at_k['pass@1']:.3f}" if d.pass_at_k else "") for d in diffs)
            print(f"qa-{qa.id:<6} seed {seed.seed_index:<4} {runs or 'not run as a benchmark'}  "
                  f"{(qa.question or '')[:70]!r}")
        if not args.json:
            print(f"{len(rows)} QA pair(s)" + (" matched" if flt.active else ""))
    engine.dispose()
    return 0
