"""``agentflow demo``: sandbox server, local model, a rollout and a synthesis, end to end."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole system end to end (offline, with the local model)",
                       description="Start a sandbox server and the local model (or use given ones), run a rollout "
                                   "on a few tasks of the shipped rag benchmark and a small synthesis on shipped "
                                   "seeds, print the results and SQL queries to explore them, and stop what was "
                                   "started. Needs the 'local' extra, or --base-url/--model for another model.")
    p.add_argument("--home", type=Path, default=Path(".agentflow-demo"),
                   help="the demo's data folder: database, index, logs, results (default ./.agentflow-demo)")
    # The flags demo, rollout and synthesize share (older spellings kept as aliases).
    p.add_argument("--model", "--model-name", dest="model", metavar="NAME", help="model name at --base-url")
    p.add_argument("--base-url", help="use this OpenAI-compatible model endpoint instead of the local model")
    from ..localmodel.weights import DEFAULT_LOCAL_MODEL, LOCAL_MODELS

    p.add_argument("--local-model", choices=list(LOCAL_MODELS), default=None,
                   help=f"which embedded model runs without --base-url (default {DEFAULT_LOCAL_MODEL}; "
                        + "; ".join(f"{k}: {m.title} from {m.distribution}" for k, m in LOCAL_MODELS.items()) + ")")
    p.add_argument("--api-key", default=None, help="API key for --base-url (default: OPENAI_API_KEY)")
    p.add_argument("--tasks", "--number-of-tasks", dest="tasks", type=int, default=4, metavar="N",
                   help="benchmark tasks to run (default 4)")
    p.add_argument("--seeds", "--number-of-seed", dest="seeds", type=int, default=2, metavar="N",
                   help="synthesis seeds to explore (default 2)")
    p.add_argument("--max-turns", type=int, default=4, metavar="N", help="model calls per task (default 4)")
    p.add_argument("--workers", "--max-workers", dest="workers", type=int, default=None, metavar="N",
                   help="tasks and seeds run at once (default 1 with the local model, else 4 tasks, 2 seeds)")
    p.add_argument("--sandbox-url", help="use this running sandbox server instead of starting one")
    p.add_argument("--database-url", help="where runs are stored (default: sqlite in --home)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from ..demo import DemoError, DemoOptions, run_demo
    from .rollout import format_summary
    from .synthesize import format_report

    if not args.verbose:  # the demo prints its own progress lines
        logging.getLogger("agentflow").setLevel(logging.WARNING)
    if args.tasks < 1 or args.seeds < 1 or args.max_turns < 1 or (args.workers is not None and args.workers < 1):
        raise CommandError("--tasks, --seeds, --max-turns and --workers must be at least 1")
    opts = DemoOptions(home=args.home, base_url=args.base_url, model=args.model,
                       api_key=args.api_key or (os.environ.get("OPENAI_API_KEY") if args.base_url else None),
                       sandbox_url=args.sandbox_url, database_url=args.database_url, tasks=args.tasks,
                       seeds=args.seeds, max_turns=args.max_turns, workers=args.workers, local_model=args.local_model,
                       progress=not args.no_progress)
    try:
        result = run_demo(opts, say=lambda line: print(line, flush=True))
    except DemoError as err:
        raise CommandError(str(err)) from err
    summary, report = result["rollout"], result["synthesis"]
    print("\n" + format_summary(summary))
    print("\n" + format_report(report))
    t = result["timings"]
    print(f"\ndemo finished in {t['total_s']:.0f} s (rollout {t.get('rollout_s', 0):.0f} s, "
          f"synthesis {t.get('synthesis_s', 0):.0f} s)")
    stats = result.get("model_stats") or {}
    if stats.get("decode_tokens_per_s"):
        print(f"local model: {stats['requests']} requests, {stats['prompt_tokens']} prompt and "
              f"{stats['completion_tokens']} completion tokens, {stats['decode_tokens_per_s']} tokens/s generated")
    if result["model"] and not args.base_url:
        print("(a small embedded model: the demo proves the machinery, not accuracy; run it on a real model "
              "with --base-url URL --model NAME)")
    counts = result.get("counts") or {}
    if counts:
        print("database: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    print(f"\ndata folder   {result['home']} (summary of this demo: {Path(result['home']) / 'demo.json'})")
    print(f"database      {result['database_url']}")
    db = result.get("database_path")
    print("\nNext, explore the runs with SQL" + (f" (sqlite3 {db}):" if db else ":"))
    for q in result["queries"]:
        print(f"\n-- {q['title']}\n{q['sql']}")
    from .view import DEFAULT_HOST, DEFAULT_PORT, viewer_command

    print(f"\nOr look at the runs in a browser (read-only), then open http://{DEFAULT_HOST}:{DEFAULT_PORT}:")
    print(f"  {viewer_command(result['database_url'])}")
    ok = summary.get("status") == "success" and report.get("status") == "success"
    return 0 if ok else 1
