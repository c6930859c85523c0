"""Our audited call path against the naive anchor, in one sitting (issue 14).

Starts ``benchmark/naive_anchor.py`` under gunicorn (2 workers × 8 threads, one sqlite
INSERT per request), then ``agentflow serve`` (its defaults), and drives both with the
same load generator (``agentflow.bench.run_bench``) at 1, 8, 32 and 64 clients, with
and without a fresh ``X-Request-ID`` per call. Prints each row and our/anchor ratios of
server CPU per call, p99 latency and requests/s.

Usage: python benchmark/anchor_bench.py [--duration S] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.bench import format_ratios, format_summary, ratios, run_bench  # noqa: E402
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


def measure(url: str, pid: int, duration: float, action: str) -> dict:
    rows = {}
    for ids in (True, False):
        for clients in CLIENTS:
            res = run_bench(url, action, {}, clients, duration, server_pid=pid, request_ids=ids).summary()
            rows[f"{clients}{'+rid' if ids else ''}"] = res
            print(format_summary(res, f"  {clients:>2} clients{' + X-Request-ID' if ids else ''}"), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="agentflow-anchor-"))
    anchor, anchor_url = start_anchor(home)
    try:
        print("naive anchor (Flask + gunicorn 2x8 + one sqlite INSERT per call)")
        base = measure(anchor_url, anchor.pid, args.duration, "diag:noop")
    finally:
        os.killpg(anchor.pid, signal.SIGTERM)
        anchor.wait(10)
    srv = start_server(home / "agentflow", workers=None, threads=None)
    try:
        print("agentflow serve, diag:noop (audited)")
        ours = measure(srv.url, srv.proc.pid, args.duration, "diag:noop")
    finally:
        srv.stop()
    table = ratios(ours, base)
    print("\n" + "\n".join(format_ratios(table)))
    if args.json:
        Path(args.json).write_text(json.dumps({"anchor": base, "ours": ours, "ratios": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
