"""Warm pools, measured in one sitting (issue 14, targets 4 and 5).

Starts the real server (``agentflow serve``, 2 workers, confined: ``isolation: bwrap``)
in a fresh data dir and prints, at one client:

  1. ``bash:run true`` in a session vs without one (a temporary session): p50 and ratio,
     the two kinds of call alternating with a pause after each pair (the pool refills);
  2. ``code:run 1+1`` in a session vs without one, the same way: p50 and ratio;
  3. ``code`` session create p50 (after the pool has filled; the pool is given time to
     refill between creates, as it would be between rollout tasks);
  4. ``code:run 1+1`` p50 (in a session, calls back to back), and ``bash:run true`` the same
     way beside it (what the server's own path costs, without a kernel).

Usage: python benchmark/pool_speed.py [--calls N] [--temp-calls N] [--creates N] [--pool-size N]
       [--refill-wait S] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.bench import BenchResult  # noqa: E402
from benchmark.server_bench import timed_calls, timed_creates  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def p50(values: list[float]) -> float:
    return BenchResult(len(values), 1.0, values, Counter(), Counter()).summary()["p50_ms"]


def paired_calls(url: str, action: str, params: dict, n: int, pause: float) -> tuple[list[float], list[float]]:
    """``n`` rounds of: one call in the session of ``bench-s``, one without a session
    (``bench-t`` has none), then ``pause`` seconds (the pool refills) — both kinds of
    call measured under the same pacing."""
    http = requests.Session()
    inside, temporary = [], []
    for _ in range(n):
        for worker, out in (("bench-s", inside), ("bench-t", temporary)):
            t0 = time.perf_counter()
            reply = http.post(url + "/execute", json={"worker_id": worker, "action": action, "params": params},
                              timeout=120).json()
            out.append((time.perf_counter() - t0) * 1000)
            assert reply["code"] == 0, reply
            assert reply["meta"]["temporary_session"] is (worker == "bench-t"), reply["meta"]
        time.sleep(pause)
    return inside, temporary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="back-to-back code:run 1+1 calls")
    ap.add_argument("--temp-calls", type=int, default=30, help="rounds of (call in a session, call without one) per tool")
    ap.add_argument("--creates", type=int, default=15)
    ap.add_argument("--pool-size", type=int, default=None,
                    help="pool_size for bash and code (default: the backends' own default)")
    ap.add_argument("--refill-wait", type=float, default=2.0,
                    help="seconds between temporary calls / creates (the pool refills meanwhile)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="af-poolbench-"))
    config = None
    if args.pool_size is not None:
        config = {"resources": {name: {"config": {"pool_size": args.pool_size}} for name in ("bash", "code")}}
    srv = start_server(home, config=config, workers=2, threads=8)
    out: dict = {}
    try:
        url = srv.url
        time.sleep(3.0)  # the pools fill (when there are pools)
        http = requests.Session()
        for resource in ("bash", "code"):
            reply = http.post(url + "/session/create", json={"worker_id": "bench-s", "resource_type": resource},
                              timeout=120).json()
            assert reply["code"] == 0, reply
        timed_calls(url, "bash:run", {"command": "true"}, 20, "bench-s")
        timed_calls(url, "code:run", {"code": "1+1"}, 20, "bench-s")
        run_1plus1 = timed_calls(url, "code:run", {"code": "1+1"}, args.calls, "bench-s")
        run_true = timed_calls(url, "bash:run", {"command": "true"}, args.calls, "bench-s")
        bash_in, bash_tmp = paired_calls(url, "bash:run", {"command": "true"}, args.temp_calls, args.refill_wait)
        code_in, code_tmp = paired_calls(url, "code:run", {"code": "1+1"}, args.temp_calls, args.refill_wait)
        create = timed_creates(url, "code", args.creates, args.refill_wait)
        out = {
            "bash_in_session_p50_ms": p50(bash_in),
            "bash_temporary_p50_ms": p50(bash_tmp),
            "bash_ratio": round(p50(bash_tmp) / p50(bash_in), 2),
            "code_in_session_p50_ms": p50(code_in),
            "code_temporary_p50_ms": p50(code_tmp),
            "code_ratio": round(p50(code_tmp) / p50(code_in), 2),
            "code_create_p50_ms": p50(create),
            "code_run_1plus1_p50_ms": p50(run_1plus1),
            "bash_run_true_p50_ms": p50(run_true),
        }
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"bash:run true      in a session p50 {out['bash_in_session_p50_ms']:8.2f} ms | without one "
          f"{out['bash_temporary_p50_ms']:8.2f} ms | ratio {out['bash_ratio']:.2f} (target <= 1.5)")
    print(f"code:run 1+1       in a session p50 {out['code_in_session_p50_ms']:8.2f} ms | without one "
          f"{out['code_temporary_p50_ms']:8.2f} ms | ratio {out['code_ratio']:.2f} (target <= 1.5)")
    print(f"code session create p50 {out['code_create_p50_ms']:8.2f} ms (target <= 50)")
    print(f"code:run 1+1 p50        {out['code_run_1plus1_p50_ms']:8.2f} ms (target <= 5); bash:run true beside it "
          f"{out['bash_run_true_p50_ms']:.2f} ms (both back to back, in a session)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
