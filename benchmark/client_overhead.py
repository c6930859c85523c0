"""Client overhead: ``Sandbox.execute_sync("diag:noop")`` vs a bare ``requests.post``.

The Sandbox sends an ``X-Request-ID`` with every call, which makes the server keep
an idempotency record; the "+ X-Request-ID" row does the same with a bare session,
so the difference between those two rows is the client's own overhead.

Runs each way of calling ``POST /execute`` N times, interleaved in rounds so that
load from other processes hits all of them alike, and prints the median and p90
round trip plus the client's own CPU time per call.

    python benchmark/client_overhead.py                 # starts a private server
    python benchmark/client_overhead.py --url http://127.0.0.1:18890 -n 1000
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentflow.sandbox import Sandbox  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server (default: start a private one)")
    parser.add_argument("-n", type=int, default=500, help="calls per method (default 500)")
    parser.add_argument("--round", type=int, default=25, help="calls per method per round")
    args = parser.parse_args()

    if args.url:
        url, auto = args.url, False
    else:
        os.environ["AGENTFLOW_HOME"] = tempfile.mkdtemp(prefix="agentflow-bench-")
        url, auto = f"http://127.0.0.1:{_free_port()}", True
    token = os.environ.get("AGENTFLOW_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"worker_id": "bench", "action": "diag:noop", "params": {}}

    with Sandbox(server_url=url, worker_id="bench", auto_start_server=auto) as sb:
        session = requests.Session()
        loop = asyncio.new_event_loop()
        methods = {
            "requests.post (new connection each call)":
                lambda: requests.post(url + "/execute", json=body, headers=headers, timeout=60).json(),
            "requests.Session.post (keep-alive)":
                lambda: session.post(url + "/execute", json=body, headers=headers, timeout=60).json(),
            "requests.Session.post + X-Request-ID":
                lambda: session.post(url + "/execute", json=body, timeout=60,
                                     headers={**headers, "X-Request-ID": uuid.uuid4().hex}).json(),
            "Sandbox.execute_sync":
                lambda: sb.execute_sync("diag:noop"),
            "await Sandbox.execute (one at a time)":
                lambda: loop.run_until_complete(sb.execute("diag:noop")),
        }
        for fn in methods.values():  # warm up connections and the server
            for _ in range(20):
                assert fn()["code"] == 0
        wall = {name: [] for name in methods}
        cpu = {name: 0.0 for name in methods}
        done = 0
        while done < args.n:
            k = min(args.round, args.n - done)
            for name, fn in methods.items():
                for _ in range(k):
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn()
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name] += time.process_time() - c0
            done += k
        loop.close()

    print(f"POST /execute diag:noop, {args.n} calls each, server {url}")
    print(f"{'method':42} {'median ms':>10} {'p90 ms':>8} {'client CPU ms/call':>19}")
    for name in methods:
        xs = sorted(wall[name])
        p90 = xs[int(0.9 * (len(xs) - 1))]
        print(f"{name:42} {statistics.median(xs) * 1000:10.3f} {p90 * 1000:8.3f} {cpu[name] / len(xs) * 1000:19.3f}")
    base = statistics.median(wall["requests.post (new connection each call)"])
    keep = statistics.median(wall["requests.Session.post (keep-alive)"])
    same = statistics.median(wall["requests.Session.post + X-Request-ID"])
    ours = statistics.median(wall["Sandbox.execute_sync"])
    print(f"execute_sync vs requests.post: {(ours - base) * 1000:+.3f} ms; "
          f"vs Session.post: {(ours - keep) * 1000:+.3f} ms; "
          f"vs Session.post with the same X-Request-ID header (same server work): {(ours - same) * 1000:+.3f} ms")


if __name__ == "__main__":
    main()
