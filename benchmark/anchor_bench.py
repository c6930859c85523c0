"""Our audited call path against the naive anchor, in one sitting (issue 14).

Starts ``benchmark/naive_anchor.py`` under gunicorn (2 workers × 8 threads, one sqlite
INSERT per request) and ``agentflow serve`` (its defaults), and drives both with the
same load generator (``agentflow.bench.run_bench``) at 1, 8, 32 and 64 clients, with
and without a fresh ``X-Request-ID`` per call. Each round measures every row on both
servers back to back; the ratios (ours/anchor of server CPU per call, p99 latency and
requests/s) are the median over the rounds, with their range: on a shared machine a
single pass drifts by more than the differences it is meant to show.

Usage: python benchmark/anchor_bench.py [--duration S] [--rounds N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.bench import format_summary, ratios, run_bench  # noqa: E402
from tests.support.server import free_port, start_server  # noqa: E402

CLIENTS = (1, 8, 32, 64)


def start_anchor(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ANCHOR_DB": str(home / "anchor.db")}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "8", "-k", "gthread",
                             "-b", f"127.0.0.1:{port}", "--log-level", "warning", "benchmark.naive_anchor:app"],
                            cwd=REPO, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.post(url + "/execute", json={"worker_id": "w", "action": "a", "params": {}}, timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the anchor did not start")


def measure_once(url: str, pid: int, duration: float, clients: int, ids: bool) -> dict:
    return run_bench(url, "diag:noop", {}, clients, duration, server_pid=pid, request_ids=ids).summary()


def median_ratios(rounds: list[dict]) -> dict:
    """Per row and figure, the median of the rounds' ratios and their range."""
    out = {}
    for key in rounds[0]:
        out[key] = {}
        for fig in ("cpu", "p99", "req_s"):
            values = sorted(r[key][fig] for r in rounds if r[key][fig] is not None)
            out[key][fig] = {"median": statistics.median(values) if values else None,
                             "min": values[0] if values else None, "max": values[-1] if values else None}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; in each, every row is measured on both servers back to back (default 3)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="agentflow-anchor-"))
    anchor, anchor_url = start_anchor(home)
    srv = None
    try:
        srv = start_server(home / "agentflow", workers=None, threads=None)
        servers = {"anchor": (anchor_url, anchor.pid), "ours": (srv.url, srv.proc.pid)}
        rows: dict[str, list[dict]] = {"anchor": [], "ours": []}
        per_round = []
        for r in range(args.rounds):
            # the two servers of one row are measured one right after the other (the
            # first of them alternating by round), so a drift of this shared machine
            # moves both figures of a ratio alike
            order = ("anchor", "ours") if r % 2 == 0 else ("ours", "anchor")
            got: dict[str, dict] = {"anchor": {}, "ours": {}}
            print(f"round {r + 1} of {args.rounds}", flush=True)
            for ids in (True, False):
                for clients in CLIENTS:
                    key = f"{clients}{'+rid' if ids else ''}"
                    for name in order:
                        url, pid = servers[name]
                        got[name][key] = res = measure_once(url, pid, args.duration, clients, ids)
                        print(format_summary(res, f"  {name:<6} {clients:>2} clients{' + X-Request-ID' if ids else ''}"),
                              flush=True)
            for name in rows:
                rows[name].append(got[name])
            per_round.append(ratios(got["ours"], got["anchor"]))
    finally:
        os.killpg(anchor.pid, signal.SIGTERM)
        anchor.wait(10)
        if srv is not None:
            srv.stop()
    table = median_ratios(per_round)
    print(f"\nours / anchor, median of {args.rounds} rounds [range] (server CPU per call, p99, req/s)")
    for key, figs in table.items():
        print(f"  c={key:<7} " + "   ".join(f"{fig} {v['median']}x [{v['min']}-{v['max']}]" for fig, v in figs.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios_per_round": per_round, "ratios": table},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
