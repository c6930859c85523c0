"""``agentflow synthesize --config …``: run or resume a synthesis and print its report."""
from __future__ import annotations

import argparse
import json
import sys

from . import CommandError, CountOrFile, parse_set_options, quiet_http_logs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthesize", help="explore tools from seeds and write verified QA data",
                       description="Run (or resume) a synthesis. Flags override the config file's keys.")
    p.add_argument("--config", help="synthesis config JSON (e.g. configs/synthesis/rag.json); optional with "
                                    "--run-id R --resume, which rebuilds the run from the database")
    p.add_argument("--run-id", help="name of the run (default: synth-<time>-<random>)")
    p.add_argument("--resume", action="store_true", help="continue run --run-id that is not running: skip finished seeds. A run that is "
                        "still running (elsewhere) is joined with or without --resume")
    # The flags demo, rollout and synthesize share: --model --base-url --api-key --tasks/--seeds
    # --max-turns --workers (the older spellings stay as aliases).
    p.add_argument("--model", "--model-name", dest="model_name", metavar="NAME", help="model that explores and writes QA")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint of the model")
    p.add_argument("--api-key", help="API key of --base-url (default: the config's api_key)")
    p.add_argument("--seeds", action=CountOrFile, count_dest="number_of_seed", metavar="N|FILE",
                   help="use only the first N seeds; a file name instead is a seeds file (as --seeds-file)")
    p.add_argument("--number-of-seed", dest="number_of_seed", type=int, metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--seeds-file", dest="seeds", metavar="FILE", help="seeds file (instead of the config's seeds_file)")
    p.add_argument("--workers", "--max-workers", dest="max_workers", type=int, metavar="N",
                   help="seeds explored at once")
    p.add_argument("--output-dir", help="parent folder of the run's files: each run gets <dir>/<run_id>/")
    p.add_argument("--sandbox-url", dest="sandbox_server_url", help="sandbox server URL")
    p.add_argument("--database-url", help="database (default: AGENTFLOW_DATABASE_URL or sqlite in AGENTFLOW_HOME)")
    p.add_argument("--cache", choices=["read_write", "read_only", "off"],
                   help="model-call cache: read_write (default; AGENTFLOW_MODEL_CACHE), read_only (no model call: "
                        "a miss is an error) or off")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key (VALUE is JSON when it parses, else a string); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)


def _overrides(args: argparse.Namespace) -> dict:
    out = {k: getattr(args, k) for k in ("run_id", "max_workers", "model_name", "base_url", "output_dir",
                                         "number_of_seed", "sandbox_server_url", "database_url", "api_key", "cache")}
    if args.resume:
        out["resume"] = True
    out.update(parse_set_options(args.set))
    return out


def _run(args: argparse.Namespace) -> int:
    from ..synthesis import SynthesisError, synthesize

    quiet_http_logs(args.verbose)
    if not args.config and not (args.resume and args.run_id):
        raise CommandError("give --config FILE (or --run-id R --resume to continue a stored run)")
    try:
        report = synthesize(args.config, seeds=args.seeds, progress=not args.no_progress, **_overrides(args))
    except SynthesisError as err:
        raise CommandError(str(err)) from err
    except KeyboardInterrupt:
        print("interrupted: stored nodes and QA are kept; continue with --run-id <run> --resume", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0 if report.get("status") == "success" else 1


def format_report(r: dict) -> str:
    """A short human-readable run report."""
    seeds, nodes, paths, qa = r["seeds"], r["nodes"], r["paths"], r["qa"]
    lines = [f"run {r['run_id']}: {r['status']}  (model {r['model_name']})"]
    if r.get("error"):
        lines.append(f"  error       {r['error']}")
    lines.append(f"  seeds       {seeds['total']} (done {seeds['done']})")
    lines.append(f"  nodes       {nodes['total']} ({nodes['actions']} actions, "
                 + ", ".join(f"{k} {v}" for k, v in nodes["by_kind"].items() if k not in ("action",)) + ")")
    depth = f"   (deepest {paths['deepest']}, min_depth {paths['min_depth']})" \
        if paths.get("min_depth") is not None and "deepest" in paths else ""
    lines.append(f"  paths       {paths['candidates']} candidates, {paths['selected']} selected{depth}")
    reasons = ", ".join(f"{k} {v}" for k, v in qa["rejected_by_reason"].items())
    lines.append(f"  qa          {qa['accepted']} accepted, {qa['rejected']} rejected" + (f" ({reasons})" if reasons else ""))
    cost = r.get("cost") or {}
    if cost.get("cost_usd") is not None:
        per_qa = cost.get("cost_per_accepted_qa_usd")
        lines.append(f"  cost        ${cost['cost_usd']:.6f}"
                     + (f" (${per_qa:.6f} per accepted QA)" if per_qa is not None else ""))
    elif cost:
        lines.append(f"  cost        unknown (no price for {', '.join(cost.get('unknown_models') or []) or '?'}; "
                     f"add it under the config key 'pricing')")
    c = r.get("model_cache") or {}
    if c.get("calls"):
        rate = f" ({c['hit_rate'] * 100:.1f}%)" if c.get("hit_rate") is not None else ""
        lines.append(f"  model cache {c.get('mode') or '?'}: {c['calls']} calls, {c['hits']} hits{rate}, "
                     f"{c.get('stored', 0)} stored")
    t = r.get("throughput") or {}
    if t.get("nodes_per_minute") is not None:
        lines.append(f"  throughput  {t['nodes_made']} nodes in {t['wall_time_s']:.1f} s "
                     f"({t['nodes_per_minute']:.0f} nodes/min)")
    for key in ("qa_file", "trajectories_file", "report_file"):
        if r.get(key):
            lines.append(f"  {key:<17} {r[key]}")
    if r.get("explanation"):
        lines.append("  why no QA")
        lines.extend(f"    - {why}" for why in r["explanation"])
    if r.get("status") in ("error", "cancelled") and "resume" not in (r.get("error") or ""):
        lines.append(f"  resume      agentflow synthesize --run-id {r['run_id']} --resume")
    return "\n".join(lines)
