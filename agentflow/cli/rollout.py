"""``agentflow rollout --config …``: run or resume a rollout and print its summary."""
from __future__ import annotations

import argparse
import json
import sys

from . import CommandError, parse_set_options, quiet_http_logs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="run an agent over a benchmark and score it",
                       description="Run (or resume) a rollout. Flags override the config file's keys.")
    p.add_argument("--config", help="rollout config JSON (e.g. configs/rollout/rag.json); optional with "
                                    "--run-id R --resume, which rebuilds the run from the database")
    p.add_argument("--run-id", help="name of the run (default: <benchmark>-<time>-<random>)")
    p.add_argument("--resume", action="store_true", help="continue run --run-id that is not running: run only what is missing. A run that is "
                        "still running (elsewhere) is joined with or without --resume")
    # The flags demo, rollout and synthesize share: --model --base-url --api-key --tasks/--seeds
    # --max-turns --workers (the older spellings stay as aliases).
    p.add_argument("--model", "--model-name", dest="model_name", metavar="NAME", help="model to evaluate")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the model")
    p.add_argument("--api-key", help="API key of --base-url (default: the config's api_key)")
    p.add_argument("--tasks", "--number-of-tasks", dest="number_of_tasks", type=int, metavar="N",
                   help="run only the first N tasks")
    p.add_argument("--max-turns", type=int, metavar="N", help="model calls per task")
    p.add_argument("--workers", "--max-workers", dest="max_workers", type=int, metavar="N", help="tasks run at once")
    p.add_argument("--data-path", help="benchmark JSONL")
    p.add_argument("--output-dir", help="parent folder of the run's files: each run gets <dir>/<run_id>/")
    p.add_argument("--task-ids", help="comma-separated task ids to run")
    p.add_argument("--n-samples", type=int, help="samples per task (adds pass@k)")
    p.add_argument("--sandbox-url", dest="sandbox_server_url", help="sandbox server URL")
    p.add_argument("--database-url", help="database (default: AGENTFLOW_DATABASE_URL or sqlite in AGENTFLOW_HOME)")
    p.add_argument("--cache", choices=["read_write", "read_only", "off"],
                   help="model-call cache: read_write (default; AGENTFLOW_MODEL_CACHE), read_only (no model call: "
                        "a miss is an error) or off")
    p.add_argument("--replay", metavar="RUN_ID",
                   help="answer the tool calls with the recorded results of rollout run RUN_ID (no tool is run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key (VALUE is JSON when it parses, else a string); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)


def _overrides(args: argparse.Namespace) -> dict:
    out = {k: getattr(args, k) for k in ("run_id", "max_workers", "model_name", "base_url", "data_path", "output_dir",
                                         "number_of_tasks", "n_samples", "sandbox_server_url", "database_url",
                                         "api_key", "max_turns", "cache", "replay")}
    if args.resume:
        out["resume"] = True
    if args.task_ids:
        out["task_ids"] = [t.strip() for t in args.task_ids.split(",") if t.strip()]
    out.update(parse_set_options(args.set))
    return out


def _run(args: argparse.Namespace) -> int:
    from ..rollout import RolloutError, rollout

    quiet_http_logs(args.verbose)

    overrides = _overrides(args)
    if not args.config and not (args.resume and args.run_id):
        raise CommandError("give --config FILE (or --run-id R --resume to continue a stored run)")
    try:
        summary = rollout(args.config, progress=not args.no_progress, **overrides)
    except RolloutError as err:
        raise CommandError(str(err)) from err
    except KeyboardInterrupt:
        print("interrupted: finished tasks are saved; continue with --run-id <run> --resume "
              "(the run id is in the log above and in `agentflow runs list`)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0 if summary.get("status") == "success" else 1


def format_summary(s: dict) -> str:
    """A short human-readable summary of a run."""
    lines = [f"run {s['run_id']}: {s['status']}  ({s['benchmark_name']}, model {s['model_name']})"]
    lines.append(f"  tasks       {s['total_samples']} (completed {s['completed']}, failed {s['failed']}, "
                 f"unscored {s['unscored']}, pending {s['pending']})")
    if s.get("accuracy") is not None:
        lines.append(f"  accuracy    {s['accuracy']:.4f}   average_score {s['average_score']:.4f}   "
                     f"metric {s['metric']}")
    if s.get("pass_at_k"):
        lines.append("  " + "   ".join(f"{k} {v:.4f}" for k, v in s["pass_at_k"].items()))
    lines.append(f"  tokens      {s['total_tokens']} (prompt {s['prompt_tokens']}, completion "
                 f"{s['completion_tokens']})   turns {s['total_turns']}   tool calls {s['total_tool_calls']}")
    lines.append(format_cost(s))
    if s.get("model_cache"):
        lines.append(format_cache(s["model_cache"]))
    if s.get("wall_time_s") is not None:
        lines.append(f"  time        {s['wall_time_s']:.1f} s wall, {s['task_time_s_mean'] or 0:.2f} s per task")
    for key in ("results_file", "trajectories_file", "summary_file"):
        if s.get(key):
            lines.append(f"  {key.replace('_file', ''):<11} {s[key]}")
    lines.extend(format_failures(s))
    return "\n".join(lines)


def format_cost(s: dict) -> str:
    """``  cost        $0.012300 (model $0.010000, judge $0.002300)``, or unknown with the
    models that have no price."""
    if s.get("cost_usd") is None:
        missing = ", ".join(s.get("cost_unknown_models") or []) or "?"
        return f"  cost        unknown (no price for {missing}; add it under the config key 'pricing')"
    return f"  cost        ${s['cost_usd']:.6f} (model ${s['model_cost_usd']:.6f}, judge ${s['judge_cost_usd']:.6f})"


def format_cache(c: dict) -> str:
    """``  model cache read_write: 6 calls, 4 hits (66.7%), 12 entries (3.1 KB) in the cache``."""
    rate = f" ({c['hit_rate'] * 100:.1f}%)" if c.get("hit_rate") is not None else ""
    size = ""
    if c.get("entries") is not None:
        size = f", {c['entries']} entries ({c['size_bytes'] / 1024:.1f} KB) in the cache, {c['entries_written']} new"
    return f"  model cache {c.get('mode') or '?'}: {c['calls']} calls, {c['hits']} hits{rate}{size}"


def format_failures(s: dict) -> list[str]:
    """Why tasks did not complete (outcome × reason, top error messages), the run's error
    and, for a run that can go on, the command that resumes it."""
    lines: list[str] = []
    failed = [b for b in s.get("breakdown") or [] if b["outcome"] != "completed"]
    if failed:
        lines.append("  outcomes    " + "; ".join(f"{b['outcome']} × {b['reason']}: {b['count']}"
                                              for b in s.get("breakdown") or []))
    if s.get("top_errors"):
        lines.append("  top errors")
        for e in s["top_errors"]:
            lines.append(f"    {e['count']:>4} × {e['message'][:300]}")
    if s.get("error"):
        lines.append(f"  error       {s['error']}")
    if s.get("status") in ("error", "cancelled") and "resume" not in (s.get("error") or ""):
        lines.append(f"  resume      agentflow rollout --run-id {s['run_id']} --resume")
    return lines
