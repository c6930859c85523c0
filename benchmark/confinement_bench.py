"""What confinement costs, measured in one sitting (README, "Security").

Starts ``agentflow serve`` twice in fresh data dirs — confined (``isolation: bwrap``,
the default) and unconfined (``isolation: none``, same code path without namespaces or
cgroups) — and reports for each:
  1. ``bash:run true`` in a session, 1 client: p50/p99 end to end (the anchor beside
     it: a bare ``subprocess.run(["bash", "-c", "true"])`` loop);
  2. ``code:run 1+1`` in a session: p50/p99;
  3. session create p50 for ``bash`` and ``code`` (and ``vm`` when the GUI packages
     are there);
  4. memory per idle session: the session cgroup's charge (confined only) and the
     resident size of its processes.

Usage: python benchmark/confinement_bench.py [--calls N] [--creates N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.jail import cgroup_pids  # noqa: E402
from benchmark.server_bench import timed_calls, timed_creates  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)


def idle_memory(srv, worker: str, resource: str) -> dict:
    requests.post(srv.url + "/session/create", json={"worker_id": worker, "resource_type": resource}, timeout=120)
    time.sleep(1.0)
    with sqlite3.connect(srv.home / "agentflow.db") as db:
        state = json.loads(db.execute("SELECT state FROM sessions WHERE worker_id = ? AND status = 'active'",
                                      (worker,)).fetchone()[0])
    jail = state.get("jail") or {}
    pids = cgroup_pids(jail["key"]) if jail.get("mode") == "bwrap" else _session_members(jail.get("pid"))
    rss = sum(_rss(p) for p in pids)
    charge = None
    for path in Path("/sys/fs/cgroup").glob(f"memory/*/{jail.get('key')}/memory.usage_in_bytes"):
        charge = int(path.read_text())
    return {"processes": len(pids), "rss_mb": round(rss / 2**20, 1),
            "cgroup_mb": None if charge is None else round(charge / 2**20, 1)}


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def _session_members(sid: int | None) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if sid and fields[3] == str(sid):
                found.append(int(entry.name))
    return found


def measure(mode: str, n_calls: int, n_creates: int, vm: bool) -> dict:
    resources = {"bash": {"enabled": True}, "code": {"enabled": True}}
    gui = vm and shutil.which("Xvfb") is not None
    if gui:
        resources["vm"] = {"enabled": True}
    home = Path(tempfile.mkdtemp(prefix=f"af-bench-{mode}-"))
    srv = start_server(home, config={"server": {"isolation": mode}, "resources": resources}, workers=2, threads=8)
    try:
        requests.post(srv.url + "/session/create", json={"worker_id": "bench", "resource_type": "bash"}, timeout=60)
        requests.post(srv.url + "/session/create", json={"worker_id": "bench", "resource_type": "code"}, timeout=60)
        timed_calls(srv.url, "bash:run", {"command": "true"}, 30, "bench")  # warm both workers
        bash = timed_calls(srv.url, "bash:run", {"command": "true"}, n_calls, "bench")
        timed_calls(srv.url, "code:run", {"code": "1+1"}, 20, "bench")
        code = timed_calls(srv.url, "code:run", {"code": "1+1"}, n_calls, "bench")
        figures = {"bash_true_p50_ms": pct(bash, 50), "bash_true_p99_ms": pct(bash, 99),
                   "code_run_p50_ms": pct(code, 50), "code_run_p99_ms": pct(code, 99)}
        for resource in ("bash", "code") + (("vm",) if gui else ()):
            times = timed_creates(srv.url, resource, n_creates)
            figures[f"create_{resource}_p50_ms"] = pct(times, 50)
        figures["idle_bash"] = idle_memory(srv, "bench-idle-bash", "bash")
        figures["idle_code"] = idle_memory(srv, "bench-idle-code", "code")
        return figures
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--creates", type=int, default=10)
    ap.add_argument("--vm", action="store_true", help="also time vm session creates (needs the GUI packages)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    for _ in range(300):
        subprocess.run(["bash", "-c", "true"], check=True)
    bare = (time.perf_counter() - t0) / 300 * 1000
    results = {"bare_bash_true_ms": round(bare, 2)}
    for mode in ("bwrap", "none"):
        results[mode] = measure(mode, args.calls, args.creates, args.vm)
    print(json.dumps(results, indent=2))
    b, n = results["bwrap"], results["none"]
    print(f"\nbash:run true p50: confined {b['bash_true_p50_ms']} ms, unconfined {n['bash_true_p50_ms']} ms "
          f"(bare bash -c true {results['bare_bash_true_ms']} ms)")
    print(f"code:run 1+1 p50: confined {b['code_run_p50_ms']} ms, unconfined {n['code_run_p50_ms']} ms")
    print("session create p50: " + ", ".join(f"{k[7:-7]} {b[k]} ms (unconfined {n[k]} ms)"
                                             for k in b if k.startswith("create_")))
    print(f"idle session memory (confined): bash {b['idle_bash']}, code {b['idle_code']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
