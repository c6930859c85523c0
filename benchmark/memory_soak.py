"""Server memory under a long mixed load (issue 14, target 7: RSS per worker ≤ 120 MB
idle and after a 10-minute mixed load).

Starts ``agentflow serve`` (its defaults) in a fresh data dir, warms it, records each
gunicorn worker's RSS idle, then runs ``--clients`` threads for ``--minutes``: each
thread keeps its own worker id and cycles through a mix of calls — no-op and echo,
``rag:search``, ``bash:run`` and ``code:run`` in sessions it creates and closes every
50 calls, and calls without a session (temporary ones) — every one with its own
``X-Request-ID``. Prints the RSS of each worker every ``--every`` seconds, then idle,
peak and final RSS.

Usage: python benchmark/memory_soak.py [--minutes 10] [--clients 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.server_bench import worker_rss  # noqa: E402
from tests.support.server import start_server  # noqa: E402

MIX = [
    ("diag:noop", {}), ("diag:echo", {"value": {"k": list(range(50))}}),
    ("rag:search", {"query": "context manager exception handling", "top_k": 5}),
    ("bash:run", {"command": "echo hello; ls /"}), ("code:run", {"code": "x = sum(range(1000)); print(x)"}),
]


def client(url: str, n: int, stop: threading.Event, codes: Counter) -> None:
    http = requests.Session()
    worker = f"soak_{n}_{uuid.uuid4().hex[:6]}"
    i = 0
    while not stop.is_set():
        if i % 50 == 0:  # a fresh pair of sessions every 50 calls (the old ones are closed)
            for resource in ("bash", "code"):
                http.post(url + "/session/destroy", json={"worker_id": worker, "resource_type": resource},
                          timeout=120)
                if n % 2 == 0:  # odd clients stay without sessions: their calls use temporary ones
                    http.post(url + "/session/create", json={"worker_id": worker, "resource_type": resource},
                              timeout=120)
        action, params = MIX[i % len(MIX)]
        try:
            r = http.post(url + "/execute", json={"worker_id": worker, "action": action, "params": params},
                          headers={"X-Request-ID": uuid.uuid4().hex}, timeout=120)
            codes[f"{action} {r.json().get('code')}"] += 1
        except (requests.RequestException, ValueError) as err:
            codes[f"{action} {type(err).__name__}"] += 1
        i += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    srv = start_server(Path(tempfile.mkdtemp(prefix="agentflow-soak-")))
    try:
        requests.post(srv.url + "/warmup", json={}, timeout=300)
        idle = worker_rss(srv.proc.pid)
        print(f"idle: workers' RSS {idle} MB", flush=True)
        stop, codes = threading.Event(), Counter()
        threads = [threading.Thread(target=client, args=(srv.url, n, stop, codes), daemon=True)
                   for n in range(args.clients)]
        for t in threads:
            t.start()
        samples, t0 = [], time.monotonic()
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(min(args.every, max(0.0, args.minutes * 60 - (time.monotonic() - t0))))
            samples.append(worker_rss(srv.proc.pid))
            print(f"{time.monotonic() - t0:6.0f} s: workers' RSS {samples[-1]} MB; {sum(codes.values())} calls",
                  flush=True)
        stop.set()
        for t in threads:
            t.join(180)
        final = worker_rss(srv.proc.pid)
    finally:
        srv.stop()
    peak = max((max(s) for s in samples if s), default=0.0)
    print(f"\nidle {idle} MB; peak {peak} MB; after the load {final} MB (per worker)")
    print("calls by tool and code:", json.dumps(dict(sorted(codes.items()))))
    if args.json:
        Path(args.json).write_text(json.dumps({"idle_mb": idle, "peak_mb": peak, "final_mb": final,
                                               "samples_mb": samples, "codes": dict(codes)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
