"""Synthesis throughput: nodes per minute at several ``max_workers`` against a model with
a fixed latency (the scripted fake OpenAI server) and the real sandbox server.

Usage::

    python benchmark/synthesis_throughput.py                       # workers 1 and 8, 0.2 s model latency
    python benchmark/synthesis_throughput.py --workers 1 4 8 16 --latency 0.5 --seeds 32

Each seed grows the tree ``branching_factor=2, depth_threshold=1, max_depth=3`` (six
expansions: two siblings at depth 1, then two chains) with ``diag:echo`` as the tool,
then writes a QA pair for each of its two paths. With siblings expanded concurrently a
seed needs 3 model round trips for its tree and 2 for its QA, so the ideal rate at one
worker is 6 nodes per 5 latencies, and ``max_workers`` seeds run side by side. The figure
reported is expansion nodes (roots excluded) per minute of wall time, next to that ideal.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.synthesis import synthesize  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, call, tool_calls  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def script(req: dict):
    if any(t["function"]["name"] == "submit_qa" for t in req.get("tools") or []):
        text = req["messages"][-1]["content"]
        tag = hashlib.sha256(text.encode()).hexdigest()
        return tool_calls(call("submit_qa", {"question": f"Which value ends chain {tag[:40]}?", "answer": "x",
                                             "reasoning_steps": ["a", "b"]}))
    path = "|".join(m["content"] or "" for m in req["messages"] if m["role"] in ("tool", "user"))
    return tool_calls(call("diag-echo", {"value": hashlib.sha1(path.encode()).hexdigest()[:12]}), content="next")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model reply")
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    server = start_server(home / "server", workers=2, threads=8)
    try:
        with FakeOpenAI(script, latency=args.latency) as fake:
            print(f"model latency {args.latency:.3f} s, {args.seeds} seeds, 6 expansion nodes + 2 QA per seed")
            print(f"{'max_workers':>11} {'wall s':>8} {'nodes':>6} {'nodes/min':>10} {'ideal':>8} {'% ideal':>8}")
            for workers in args.workers:
                rep = synthesize({"model_name": "fake", "base_url": fake.base_url, "sandbox_server_url": server.url,
                                  "database_url": server.db_url, "available_tools": ["diag:echo"],
                                  "max_depth": 3, "branching_factor": 2, "depth_threshold": 1, "min_depth": 2,
                                  "max_selected_traj": 2, "max_workers": workers, "max_retries": 0,
                                  "min_answer_support": 0.0, "run_id": f"bench-{uuid.uuid4().hex[:8]}", "cache": "off",
                                  "output_dir": str(home / f"out-{workers}")},
                                 seeds=[f"benchmark seed {i}" for i in range(args.seeds)])
                wall = rep["throughput"]["wall_time_s"]
                nodes = rep["nodes"]["expansions"]
                rate = nodes / wall * 60
                ideal = 6 / (5 * args.latency) * 60 * min(workers, args.seeds)
                print(f"{workers:>11} {wall:>8.2f} {nodes:>6} {rate:>10.0f} {ideal:>8.0f} {rate / ideal:>8.0%}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
