"""``agentflow bench``: load-test a running server."""
from __future__ import annotations

import argparse
import json
import os

from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="load-test a running server (latency percentiles, throughput)")
    p.add_argument("--url", default="http://127.0.0.1:18890", help="server URL")
    p.add_argument("--action", default="diag:noop", help="tool to call (default: the no-op diagnostic tool)")
    p.add_argument("--params", default="{}", help="tool parameters as JSON")
    p.add_argument("--concurrency", "-c", type=int, nargs="+", default=[8],
                   help="concurrent clients; several values run one after another")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--duration", "-d", type=float, default=None, help="seconds per run (default 10)")
    group.add_argument("--requests", "-n", type=int, default=None, help="total calls per run")
    p.add_argument("--processes", type=int, help="load-generating processes (default: min(clients, cores))")
    p.add_argument("--server-pid", type=int, help="gunicorn master pid, to report server CPU per call")
    p.add_argument("--token", default=os.environ.get("AGENTFLOW_API_TOKEN"), help="bearer token")
    p.add_argument("--no-request-id", action="store_true",
                   help="send no X-Request-ID (the AgentFlow client always sends one)")
    p.add_argument("--anchor-url", help="also load this server (e.g. benchmark/naive_anchor.py under gunicorn) "
                                        "the same way and print our/its ratios")
    p.add_argument("--anchor-pid", type=int, help="the anchor's gunicorn master pid, for its CPU per call")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from ..bench import format_ratios, ratios

    try:
        params = json.loads(args.params)
    except ValueError as err:
        raise CommandError(f"--params is not valid JSON: {err}") from None
    if args.anchor_pid and not args.anchor_url:
        raise CommandError("--anchor-pid needs --anchor-url")
    duration = args.duration if args.duration or args.requests else 10.0
    out = {}
    if args.anchor_url:
        out["anchor"] = _load(args, args.anchor_url, args.anchor_pid, params, duration, "anchor ")
    results = out["ours"] = _load(args, args.url, args.server_pid, params, duration, "")
    if args.anchor_url:
        out["ratios"] = ratios(results, out["anchor"])
    if args.json:
        print(json.dumps(out if args.anchor_url else results, indent=2))
    elif args.anchor_url:
        print("\n".join(format_ratios(out["ratios"])))
    return 0


def _load(args: argparse.Namespace, url: str, pid: int | None, params: dict, duration: float, label: str) -> dict:
    from ..bench import format_summary, run_bench

    results = {}
    for clients in args.concurrency:
        try:
            res = run_bench(url, args.action, params, clients, duration, args.requests, args.processes,
                            args.token, pid, request_ids=not args.no_request_id)
        except OSError as err:
            raise CommandError(f"cannot reach {url}: {err}") from None
        summary = res.summary()
        results[str(clients)] = summary
        if not args.json:
            print(format_summary(summary, f"{label}{args.action} x{clients} clients"), flush=True)
    return results
