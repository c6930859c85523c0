"""One run, every server figure of the README's "Operating AgentFlow" section.

Starts ``agentflow serve`` (default config: all offline backends) in a fresh data dir
and reports:
  1. /execute overhead on the no-op tool at 1/8/32/64 clients (latency percentiles,
     requests/s, server CPU-ms per call), with and without X-Request-ID;
  2. ``bash:run`` of ``true`` vs a bare ``subprocess.run(["bash","-c","true"])`` loop;
  3. ``rag:search`` latency on the shipped corpus;
  4. server memory (RSS of each worker) idle and under load;
  5. database growth per 10,000 audited calls.

Usage: python benchmark/server_bench.py [--workers N] [--threads N] [--duration S] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.bench import format_summary, run_bench, server_processes  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_rss(master: int) -> list[float]:
    """RSS of each gunicorn worker: the master's children running its command line
    (session jails, reparented to the master, run other programs)."""
    command = _cmdline(master)
    return [round(rss_mb(p), 1) for p in server_processes(master)[1:] if _cmdline(p) == command]


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def timed_calls(url: str, action: str, params: dict, n: int, worker: str = "bench_serial") -> list[float]:
    """Latencies (ms) of ``n`` calls one after another, each checked to succeed."""
    session = requests.Session()
    body = {"worker_id": worker, "action": action, "params": params}
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.post(url + "/execute", json=body, timeout=60).json()
        out.append((time.perf_counter() - t0) * 1000)
        assert r["code"] == 0, r
    return sorted(out)


def timed_creates(url: str, resource: str, n: int, pause: float = 0.0) -> list[float]:
    """Latencies (ms) of ``n`` session creates, each checked, its session destroyed and
    followed by ``pause`` seconds."""
    http = requests.Session()
    out = []
    for i in range(n):
        worker = f"bench-create-{resource}-{i}"
        t0 = time.perf_counter()
        reply = http.post(url + "/session/create", json={"worker_id": worker, "resource_type": resource},
                          timeout=120).json()
        out.append((time.perf_counter() - t0) * 1000)
        assert reply["code"] == 0, reply
        http.post(url + "/session/destroy", json={"worker_id": worker, "resource_type": resource}, timeout=60)
        time.sleep(pause)
    return out


def pct(values: list[float], p: float) -> float:
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None, help="default: agentflow serve's default")
    ap.add_argument("--threads", type=int, default=None, help="default: agentflow serve's default")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    figures: dict = {}
    home = Path(tempfile.mkdtemp(prefix="agentflow-bench-"))
    srv = start_server(home, workers=args.workers, threads=args.threads)  # None: agentflow serve's defaults
    master = srv.proc.pid
    try:
        requests.post(srv.url + "/warmup", json={}, timeout=300)
        figures["rss_idle_mb"] = worker_rss(master)
        print(f"workers' RSS idle: {figures['rss_idle_mb']} MB", flush=True)

        print("\n1. /execute on diag:noop (audited)")
        for ids in (True, False):
            key = "noop_with_request_id" if ids else "noop_without_request_id"
            figures[key] = {}
            for clients in (1, 8, 32, 64):
                res = run_bench(srv.url, "diag:noop", {}, clients, args.duration, server_pid=master,
                                request_ids=ids)
                figures[key][clients] = res.summary()
                print(format_summary(figures[key][clients],
                                     f"  {clients:>2} clients, {'with' if ids else 'no'} X-Request-ID"), flush=True)
                if clients == 64 and ids:
                    figures["rss_load_mb"] = worker_rss(master)

        print("\n2. bash:run true vs bare subprocess")
        bare = []
        for _ in range(300):
            t0 = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], check=True)
            bare.append((time.perf_counter() - t0) * 1000)
        bare.sort()
        requests.post(srv.url + "/session/create", json={"worker_id": "bench_serial", "resource_type": "bash"},
                      timeout=30)
        tool = timed_calls(srv.url, "bash:run", {"command": "true"}, 300)
        figures["bash_true"] = {"bare_p50_ms": pct(bare, 50), "bare_p99_ms": pct(bare, 99),
                                "tool_p50_ms": pct(tool, 50), "tool_p99_ms": pct(tool, 99)}
        print(f"  bare bash -c true: p50 {pct(bare, 50)} ms, p99 {pct(bare, 99)} ms; "
              f"bash:run true (session, 1 client): p50 {pct(tool, 50)} ms, p99 {pct(tool, 99)} ms")

        print("\n3. rag:search on the shipped corpus")
        rag = timed_calls(srv.url, "rag:search", {"query": "context manager exception handling", "top_k": 5}, 300)
        figures["rag_search"] = {"p50_ms": pct(rag, 50), "p99_ms": pct(rag, 99)}
        print(f"  rag:search end to end, 1 client: p50 {pct(rag, 50)} ms, p99 {pct(rag, 99)} ms")

        print("\n4. memory")
        print(f"  workers' RSS idle {figures['rss_idle_mb']} MB, after 64-client load {figures['rss_load_mb']} MB")

        print("\n5. database growth per 10,000 audited calls")
        db = home / "agentflow.db"

        def size() -> int:
            return sum(p.stat().st_size for p in home.glob("agentflow.db*"))

        def checkpointed_size() -> int:
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return size()

        before = checkpointed_size()
        res = run_bench(srv.url, "diag:noop", {}, 16, None, requests_total=10_000, request_ids=True)
        grown = checkpointed_size() - before
        figures["db_growth_per_10k_calls_mb"] = round(grown / 1e6, 2)
        print(f"  {res.calls} calls with X-Request-ID: database grew {grown / 1e6:.2f} MB "
              f"({grown / max(1, res.calls):.0f} bytes per call, audit row + request record)")
    finally:
        srv.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
