"""A cluster of three sandbox nodes on PostgreSQL behind nginx: what forwarding costs per
call, and how long a dead node takes to be noticed (issue 13).

Starts the cluster of the tests (``tests/support/cluster.py``: a throwaway PostgreSQL,
three ``agentflow serve`` nodes each in its own mount namespace, nginx round robin in
front; needs root, nginx, PostgreSQL's server binaries and psycopg), then measures, in
one sitting:

(a) forwarding overhead: a ``bash`` session owned by node-a; ``bash:run true`` sent to
    the owner directly (local), to node-b (forwarded to node-a and relayed back) and
    through nginx (two calls in three are forwarded), interleaved call by call, one
    client; p50/p99/mean per path and the forwarded-minus-local difference;
(b) failover: a ``code`` session owned by node-c; ``kill -9`` of node-c's gunicorn
    master (or of every process of node-c at once, as when its machine dies), then,
    with clients polling through nginx every 50 ms: when its workers are gone, when a
    call for the session answers 1003 ``node_lost``, and when a new session (created
    through nginx) first runs a call on a live node; node-c is restarted between trials.

Usage: python benchmark/cluster_bench.py [--calls N] [--trials N] [--lease S] [--database-url URL] [--json out.json]

``--database-url``: a PostgreSQL server to use (the bench creates a fresh database on
it) instead of starting a throwaway one.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import cluster_problem, start_cluster  # noqa: E402
from tests.support.postgres import postgres_or_exit  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def stats(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


def forwarding(cluster, calls: int) -> dict:
    worker = f"bench-fwd-{uuid.uuid4().hex[:6]}"
    created = cluster.create_session(worker, "bash", node="node-a")
    assert created.status_code == 200, created.text
    sid = created.json()["data"]["session_id"]
    assert cluster.session_row(sid)["node_id"] == "node-a"
    paths = {"local (to the owner)": cluster.url("node-a"), "forwarded (to node-b)": cluster.url("node-b"),
             "through nginx (2/3 forwarded)": cluster.balancer_url}
    http = {name: requests.Session() for name in paths}
    times: dict[str, list[float]] = {name: [] for name in paths}
    body = {"worker_id": worker, "action": "bash:run", "params": {"command": "true"}}
    for i in range(calls + 20):  # the first 20 rounds warm connections and caches
        for name, url in paths.items():
            t0 = time.perf_counter()
            resp = http[name].post(url + "/execute", json=body, timeout=30,
                                   headers=cluster.headers(uuid.uuid4().hex))
            took = (time.perf_counter() - t0) * 1000
            out = resp.json()
            if out["code"] != 0 or out["meta"].get("node_id") != "node-a":
                raise RuntimeError(f"{name}: {out}")
            if i >= 20:
                times[name].append(took)
    cluster.destroy_session(worker, "bash", node="node-a")
    rows = {name: stats(ms) for name, ms in times.items()}
    local, fwd = rows["local (to the owner)"], rows["forwarded (to node-b)"]
    rows["forwarding overhead"] = {"n": calls, "p50_ms": round(fwd["p50_ms"] - local["p50_ms"], 2),
                                   "p99_ms": round(fwd["p99_ms"] - local["p99_ms"], 2),
                                   "mean_ms": round(fwd["mean_ms"] - local["mean_ms"], 2)}
    return rows


def failover(cluster, lease: float, whole: bool) -> dict:
    """One trial; three pollers run side by side from the kill on. ``whole``: kill
    every process of the node at once (a machine that dies), else only its master."""
    worker = f"bench-lost-{uuid.uuid4().hex[:6]}"
    assert cluster.create_session(worker, "code", node="node-c").json()["code"] == 0
    first = cluster.execute(worker, "code:run", {"code": "x = 1"})
    assert first["code"] == 0 and first["meta"]["node_id"] == "node-c", first
    workers = cluster.nodes["node-c"].worker_pids()
    limit = lease * 4 + 20
    found: dict[str, float] = {}
    slowest = [0.0]

    def workers_gone():
        while time.monotonic() - t_kill < limit:
            if not any(_alive(p) for p in workers):
                found["gone"] = time.monotonic() - t_kill
                return
            time.sleep(0.01)

    def call_lost():
        while time.monotonic() - t_kill < limit:
            t0 = time.monotonic()
            try:
                out = cluster.execute(worker, "code:run", {"code": "print(x)"}, timeout=limit)
            except (requests.RequestException, ValueError):
                out = {}
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            if out.get("code") == 1003 and (out.get("data") or {}).get("node_lost"):
                found["lost"] = time.monotonic() - t_kill
                return
            time.sleep(0.05)

    def new_session():
        while time.monotonic() - t_kill < limit:
            w = f"bench-new-{uuid.uuid4().hex[:6]}"
            try:
                resp = cluster.create_session(w, "bash", timeout=limit)
                if resp.status_code == 200 and resp.json()["code"] == 0:
                    out = cluster.execute(w, "bash:run", {"command": "echo ok"}, timeout=limit)
                    cluster.destroy_session(w, "bash")
                    if out["code"] == 0 and out["meta"].get("node_id") != "node-c":
                        found["new"] = time.monotonic() - t_kill
                        return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)

    t_kill = cluster.kill("node-c", wait_workers=0, whole=whole).killed_at
    threads = [threading.Thread(target=f) for f in (workers_gone, call_lost, new_session)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cluster.start_node("node-c")
    gone, lost, new = found.get("gone"), found.get("lost"), found.get("new")
    return {"workers_gone_s": _r(gone), "call_1003_s": _r(lost),
            "1003_after_gone_s": _r(lost - gone) if lost is not None and gone is not None else None,
            "new_session_s": _r(new), "slowest_call_s": _r(slowest[0])}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def print_table(title: str, header: tuple, rows: list[tuple]) -> None:
    table = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"\n{title}")
    for n, r in enumerate(table):
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300, help="measured calls per path (default 300)")
    ap.add_argument("--trials", type=int, default=3, help="failover trials (default 3)")
    ap.add_argument("--lease", type=float, default=3.0, help="server.node_lease of the nodes, seconds (default 3)")
    ap.add_argument("--database-url", help="a PostgreSQL server to create the bench's database on")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    problem = cluster_problem()
    if problem:
        sys.exit(f"cannot start a cluster here: {problem}")
    with contextlib.ExitStack() as stack:
        pg = args.database_url or stack.enter_context(postgres_or_exit())
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentflow-cluster-bench-")))
        t0 = time.monotonic()
        cluster = stack.enter_context(start_cluster(base, pg, node_lease=args.lease))
        print(f"cluster up in {time.monotonic() - t0:.1f}s: 3 nodes (2 workers x 8 threads each, isolation "
              f"{cluster.isolation}, node_lease {args.lease:g}s) behind nginx at {cluster.balancer_url}", flush=True)
        fwd = forwarding(cluster, args.calls)
        print_table(f"(a) bash:run 'true' in a session on node-a, one client, {args.calls} calls per path",
                    ("path", "p50 ms", "p99 ms", "mean ms"),
                    [(name, r["p50_ms"], r["p99_ms"], r["mean_ms"]) for name, r in fwd.items()])
        trials = [{"kill": kill, **failover(cluster, args.lease, kill == "whole node")}
                  for kill in ("master", "whole node") for _ in range(args.trials)]
        print_table(f"(b) failover of the owner node (node_lease {args.lease:g}s; clients polling through nginx "
                    "meanwhile), seconds from the kill -9",
                    ("kill -9 of", "workers gone", "call -> 1003", "1003 after gone", "new session ok",
                     "slowest call"),
                    [(t["kill"], t["workers_gone_s"], t["call_1003_s"], t["1003_after_gone_s"], t["new_session_s"],
                      t["slowest_call_s"]) for t in trials])
        if args.json:
            Path(args.json).write_text(json.dumps({"forwarding": fwd, "failover": trials, "lease": args.lease,
                                                   "isolation": cluster.isolation}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
