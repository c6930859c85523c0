"""GUI backends through the real server: session start (cold and from the warm pool),
screenshot latency, and memory per session.

Usage::

    python benchmark/gui_latency.py                 # 5 sessions of each kind, 20 screenshots each

Memory is the PSS (proportional set size, shared pages split between their users) of
every process a session started, found by the session's environment marker; RSS would
count the shared libraries of Xvfb and Chromium once per process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.tools.gui.x11 import marker_pids  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _state(server, session_id: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(server.db_url)
    with engine.connect() as conn:
        raw = conn.execute(text("select state from sessions where id = :i"), {"i": session_id}).scalar_one()
    engine.dispose()
    return raw if isinstance(raw, dict) else json.loads(raw)


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"median {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms (n={len(values)})"


def run(resource: str, server, sessions: int, shots: int, config: dict, marker_of) -> None:
    starts, shot_times, memory = [], [], []
    for i in range(sessions):
        worker = f"bench-{resource}-{i}"
        t0 = time.monotonic()
        created = server.post("/session/create", {"worker_id": worker, "resource_type": resource,
                                                  "config": config}).json()
        starts.append(time.monotonic() - t0)
        assert created["code"] == 0, created
        state = _state(server, created["data"]["session_id"])
        if resource == "browser":
            server.post("/execute", {"worker_id": worker, "action": "browser:goto",
                                     "params": {"url": "seeds/gui/site/team.html"}})
        for _ in range(shots):
            t0 = time.monotonic()
            out = server.post("/execute", {"worker_id": worker, "action": f"{resource}:screenshot"}).json()
            shot_times.append(time.monotonic() - t0)
            assert out["code"] == 0, out
        memory.append(_pss_mb(marker_pids(marker_of(state))))
        server.post("/session/destroy", {"worker_id": worker, "resource_type": resource})
        time.sleep(0.5)  # let the pool refill between sessions
    print(f"  session start:  {_ms(starts)}")
    print(f"  screenshot:     {_ms(shot_times)} (HTTP round trip, PNG base64 in JSON)")
    print(f"  memory/session: {statistics.median(memory):.0f} MB PSS (median of {len(memory)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--shots", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gui-bench-"))
    config = {"resources": {"vm": {"config": {"pool_size": 2}}, "browser": {}},
              "warmup": {"enabled": True, "resources": ["vm", "browser"]}}
    server = start_server(home, config=config)
    try:
        server.post("/warmup", {"backends": ["vm", "browser"]})
        print("vm, 1280x800, warm pool (pool_size 2):")
        run("vm", server, args.sessions, args.shots, {}, lambda s: s["display"]["marker"])
        print("vm, 1000x700, cold (no pooled display of that size):")
        run("vm", server, args.sessions, args.shots, {"screen_size": [1000, 700]}, lambda s: s["display"]["marker"])
        print("browser, 1280x800 viewport, one Chromium per session:")
        run("browser", server, args.sessions, args.shots, {}, lambda s: s["browser"]["marker"])
    finally:
        server.stop()


if __name__ == "__main__":
    main()
