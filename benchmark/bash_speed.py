"""``bash:run true`` in a confined session, beside the raw spawn rate of the machine
(issue 14, target 3), measured in one sitting.

Starts ``agentflow serve`` (2 workers × 8 threads, ``isolation: bwrap``) in a fresh data
dir and prints:
  (a) p50/p90/p99 of ``bash:run true`` in one session, one client;
  (b) calls/s of ``bash:run true`` with 8 sessions, one client each (c=8), and the CPU
      per call of the server and the sessions (their commands included);
  (c) the raw rate of ``bash -c true`` spawned by 2 processes (a ``subprocess.run``
      loop in each), and the ratio (b)/(c).
Target 3: (a) p50 ≤ 3 ms, (b)/(c) ≥ 40 %.

Usage: python benchmark/bash_speed.py [--calls N] [--duration S] [--rounds N] [--isolation bwrap|none]
       [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.bench import run_bench, server_processes  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)


def serial(url: str, worker: str, n: int) -> list[float]:
    http = requests.Session()
    body = {"worker_id": worker, "action": "bash:run", "params": {"command": "true"}}
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = http.post(url + "/execute", json=body, timeout=60).json()
        out.append((time.perf_counter() - t0) * 1000)
        assert reply["code"] == 0 and reply["meta"]["temporary_session"] is False, reply
    return out


def _spawn_loop(deadline: float) -> int:
    n = 0
    while time.monotonic() < deadline:
        subprocess.run(["bash", "-c", "true"], check=True)
        n += 1
    return n


def raw_spawn_rate(duration: float, processes: int = 2) -> float:
    """``bash -c true`` per second, spawned by ``processes`` loops at once."""
    t0 = time.monotonic()
    with mp.get_context("fork").Pool(processes) as pool:
        counts = pool.map(_spawn_loop, [t0 + duration] * processes)
    return sum(counts) / (time.monotonic() - t0)


def tree_cpu_ms(master: int) -> float:
    """CPU time of the server's whole process tree, the sessions' jails included, and of
    the children they reaped (each command of a session)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in server_processes(master):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total * 1000 / tick


def create(url: str, worker: str) -> None:
    reply = requests.post(url + "/session/create", json={"worker_id": worker, "resource_type": "bash"},
                          timeout=120).json()
    assert reply["code"] == 0, reply


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400, help="calls for (a)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds for (b) and (c)")
    ap.add_argument("--rounds", type=int, default=3, help="(b) and (c) alternate this many times; medians")
    ap.add_argument("--isolation", default="bwrap")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="af-bash-speed-"))
    srv = start_server(home, config={"server": {"isolation": args.isolation},
                                     "resources": {"bash": {"enabled": True}}}, workers=2, threads=8)
    figures: dict = {"isolation": args.isolation}
    try:
        create(srv.url, "speed-serial")
        serial(srv.url, "speed-serial", 50)  # both workers warm
        lat = serial(srv.url, "speed-serial", args.calls)
        figures["c1"] = {"p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
                         "mean_ms": round(statistics.fmean(lat), 2)}
        print(f"(a) bash:run true, 1 session, c=1: p50 {figures['c1']['p50_ms']} ms, p90 {figures['c1']['p90_ms']} ms,"
              f" p99 {figures['c1']['p99_ms']} ms ({args.calls} calls)", flush=True)

        workers = [f"speed-c8-{i}" for i in range(8)]
        for w in workers:
            create(srv.url, w)
        rates, raws, p50s, cpus = [], [], [], []
        for r in range(args.rounds):
            cpu0 = tree_cpu_ms(srv.proc.pid)
            res = run_bench(srv.url, "bash:run", {"command": "true"}, 8, args.duration, server_pid=srv.proc.pid,
                            warmup_calls=0, request_ids=True, worker_ids=workers).summary()
            cpus.append((tree_cpu_ms(srv.proc.pid) - cpu0) / max(1, res["calls"]))
            assert set(res["codes"]) == {"0"} and not res["errors"], res
            raw = raw_spawn_rate(args.duration)
            rates.append(res["requests_per_s"])
            raws.append(raw)
            p50s.append(res["p50_ms"])
            print(f"    round {r + 1}: {res['requests_per_s']} calls/s (p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms,"
                  f" CPU {cpus[-1]:.2f} ms/call for the server and the session's processes); raw {raw:.0f}/s",
                  flush=True)
        figures["c8"] = {"calls_per_s": statistics.median(rates), "p50_ms": statistics.median(p50s),
                         "cpu_ms_per_call": round(statistics.median(cpus), 3)}
        figures["raw_spawn_per_s"] = round(statistics.median(raws), 1)
        figures["ratio"] = round(figures["c8"]["calls_per_s"] / figures["raw_spawn_per_s"], 3)
        print(f"(b) bash:run true, 8 sessions, c=8: {figures['c8']['calls_per_s']} calls/s "
              f"(p50 {figures['c8']['p50_ms']} ms; {figures['c8']['cpu_ms_per_call']} CPU-ms per call, server and "
              "sessions)")
        print(f"(c) raw bash -c true, 2 processes: {figures['raw_spawn_per_s']}/s; "
              f"(b)/(c) = {figures['ratio'] * 100:.1f} % (target ≥ 40 %); (a) p50 target ≤ 3 ms")
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
