"""Rollout throughput against a fixed-latency model, and AgentFlow's time per agent turn.

Starts a real sandbox server (gunicorn, temporary data dir) and the scripted fake model
of ``tests/support/fake_openai.py``; every task takes two model turns (one ``diag:echo``
tool call, then the answer). Prints, for each ``max_workers``, the wall time against the
ideal (tasks × turns × latency ÷ workers), and the AgentFlow time per turn: task time
minus the time spent waiting for the model and for the sandbox ("AF ms/turn": the agent
loop alone; "e2e AF", at one worker: wall time minus all model and sandbox time, per
turn, so run setup, session open/close, scoring and the per-task commit are included),
and "cpu/task": the CPU time of this process (the rollout) per task. "chat-only" is the
ceiling the model client sets on this machine at that moment: the same number of threads
sending the same two requests per task through ``ChatModel`` alone (no sandbox, no
database), as a share of the same ideal.

The fake model runs in a process of its own by default (``--model-server process``:
``FakeOpenAIProcess``, an asyncio server with keep-alive that serves any number of
concurrent requests): ``--model-server inline`` runs the test suite's ``FakeOpenAI`` in
this process as before, whose werkzeug server closes every connection and competes
with the rollout for the GIL, so that the harness, not the rollout, is measured.

    python benchmark/rollout_concurrency.py --tasks 32 --latency 0.1 --workers 1 8 32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from agentflow.db import make_engine, make_session_factory  # noqa: E402
from agentflow.db.rollout import RolloutAttempt  # noqa: E402
from agentflow.rollout import rollout  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, FakeOpenAIProcess, call, first_user, tool_calls, turn  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def script(req):
    word = first_user(req).split()[-1]
    return tool_calls(call("diag-echo", {"value": word})) if turn(req) == 0 else f"<answer>{word}</answer>"


def chat_only(base_url: str, tools: list[dict], tasks: int, workers: int, latency: float) -> float:
    """Wall time of ``tasks`` × the rollout's two chat requests on ``workers`` threads,
    through :class:`~agentflow.llm.ChatModel` alone."""
    from concurrent.futures import ThreadPoolExecutor

    from agentflow.llm import ChatModel

    model = ChatModel("fake", base_url=base_url)

    def task(i: int) -> None:
        messages = [{"role": "user", "content": f"say w{i}"}]
        reply = model.chat(messages, tools=tools)
        messages += [reply.to_message(), {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                                          "content": f'{{"value": "w{i}"}}'}]
        model.chat(messages, tools=tools)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(task, range(tasks)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1, help="model latency per request, seconds")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--model-server", choices=["process", "inline"], default="process",
                    help="run the fake model in its own process (default) or in this one")
    ap.add_argument("--latencies", type=float, nargs="+", default=None,
                    help="model latencies to measure, seconds (default: --latency, then 0)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    data = tmp / "tasks.jsonl"
    data.write_text("".join(f'{{"id": "b{i}", "question": "say w{i}", "answer": "w{i}"}}\n'
                            for i in range(args.tasks)))
    server = start_server(tmp / "server", workers=2, threads=16)
    try:
        fake_cls = FakeOpenAIProcess if args.model_server == "process" else FakeOpenAI
        # the first rollout of a process also pays imports done on first use (alembic, the
        # openai resources) and the database migration check: a one-task run first, shown
        # apart, so the rows compare runs, not process start-up
        with fake_cls(script, latency=0.0) as fake:
            warm = tmp / "warm.jsonl"
            warm.write_text('{"id": "warm", "question": "say w", "answer": "w"}\n')
            t0 = time.perf_counter()
            rollout(None, model_name="fake", base_url=fake.base_url, data_path=str(warm),
                    available_tools=["diag:echo"], sandbox_server_url=server.url, database_url=server.db_url,
                    output_dir=str(tmp / "warm"), run_id=f"warm-{uuid.uuid4().hex[:8]}", progress=False, cache="off")
            print(f"first rollout of this process (1 task, start-up included): {time.perf_counter() - t0:.2f} s")
        from agentflow.sandbox import Sandbox

        with Sandbox(server.url) as sb:
            tools = [t for t in sb.list_tools_sync(include_hidden=True, format="openai")["data"]["tools"]
                     if t["function"]["name"] == "diag-echo"]
        for latency in args.latencies or (args.latency, 0.0):
            with fake_cls(script, latency=latency) as fake:
                print(f"\nmodel latency {latency * 1000:.0f} ms, {args.tasks} tasks x 2 turns")
                print(f"{'workers':>7} {'wall s':>8} {'ideal s':>8} {'eff':>6} {'speedup':>8} "
                      f"{'AF ms/turn':>10} {'e2e AF':>7} {'model ms':>9} {'tool ms':>8} {'cpu/task':>8} {'chat-only':>9}")
                base = None
                for workers in args.workers:
                    run_id = f"bench-{uuid.uuid4().hex[:8]}"
                    t0, c0 = time.perf_counter(), time.process_time()
                    s = rollout(None, model_name="fake", base_url=fake.base_url, data_path=str(data),
                                available_tools=["diag:echo"], sandbox_server_url=server.url,
                                database_url=server.db_url, output_dir=str(tmp / run_id), run_id=run_id,
                                max_workers=workers, progress=False, cache="off")  # every turn a real model call
                    wall, cpu = time.perf_counter() - t0, (time.process_time() - c0) * 1000 / args.tasks
                    assert s["accuracy"] == 1.0, s
                    engine = make_engine(server.db_url)
                    with make_session_factory(engine)() as sess:
                        rows = sess.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id)).all()
                        own = statistics.fmean((a.duration_ms - a.model_ms - a.tool_ms) / a.turns for a in rows)
                        model = statistics.fmean(a.model_ms / a.turns for a in rows)
                        tool = statistics.fmean(a.tool_ms / a.turns for a in rows)
                        turns = sum(a.turns for a in rows)
                        # everything that is not waiting for model or tool, per turn, run setup included
                        e2e = (wall * 1000 * min(workers, len(rows)) - sum(a.model_ms + a.tool_ms for a in rows)) \
                            / turns if workers == 1 else float("nan")
                    engine.dispose()
                    ideal = args.tasks * 2 * latency / workers
                    base = base or wall
                    eff = f"{ideal / wall:.0%}" if latency else "-"
                    chat = chat_only(fake.base_url, tools, args.tasks, workers, latency) if latency else None
                    chat_eff = f"{ideal / chat:.0%}" if chat else "-"
                    print(f"{workers:>7} {wall:>8.2f} {ideal:>8.2f} {eff:>6} {base / wall:>7.1f}x "
                          f"{own:>10.2f} {e2e:>7.2f} {model:>9.1f} {tool:>8.1f} {cpu:>8.2f} {chat_eff:>9}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
