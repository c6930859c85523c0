"""A generated database with one large rollout run, for the viewer's speed: 10,000 tasks
× 4 samples (40,000 attempts with 5 messages and one audited tool call each), and a
second run of the same benchmark with one sample per task to compare against.

Rows are inserted directly (no model, no server): only the pages' speed over many rows is
under test here. ``python -m tests.view.bigrun PATH`` writes it; see ``tests/view/measure.py``.
"""
from __future__ import annotations

import datetime as dt
import random
import sys
from pathlib import Path

from sqlalchemy import insert

BIG_A, BIG_B = "big-a", "big-b"
BENCHMARK = "big-bench"
_OUTCOMES = (["completed"] * 92) + ["max_turns"] * 4 + ["timeout"] * 2 + ["infra_error"] * 2
_ERRORS = {"max_turns": "no final answer after max_turns=8", "timeout": "task_timeout: ran past 600 s",
           "infra_error": "sandbox failure: SandboxConnectionError: connection refused (request_id=req-{n})"}


def _attempt_rows(run_id: str, tasks: int, samples: int, rng: random.Random, start: dt.datetime, first_id: int,
                  first_audit: int):
    attempts, messages, calls, audit = [], [], [], []
    aid, cid = first_id, first_audit
    for t in range(tasks):
        task_id = f"task-{t:05d}"
        question = f"What is the value of item {t} in the catalogue? (variant {t % 7})"
        for s in range(samples):
            status = rng.choice(_OUTCOMES)
            score = (1.0 if rng.random() < 0.6 else rng.choice([0.0, 0.0, 0.25, 0.5, 0.75])) \
                if status == "completed" else 0.0
            trace = f"tr-{run_id}-{t}-{s}"
            started = start + dt.timedelta(seconds=(t * samples + s) * 0.01)
            ms = rng.uniform(300, 9000)
            tool_ms = rng.lognormvariate(4, 1.2)
            attempts.append({
                "id": aid, "run_id": run_id, "task_id": task_id, "sample_index": s, "attempt": 1, "status": status,
                "question": question, "ground_truth": [f"v{t}", f"value {t}"], "task_metadata": {},
                "prediction": f"v{t}" if score == 1.0 else f"v{t + 1}", "final_response": f"Final Answer: v{t}",
                "metric": "exact_match", "score": score, "scored": status == "completed", "score_details": {},
                "error": _ERRORS.get(status, "").format(n=aid) or None, "turns": 2, "tool_call_count": 1,
                "prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440, "trace_id": trace,
                "worker_id": f"ro-{run_id}-w{s}", "started_at": started,
                "finished_at": started + dt.timedelta(milliseconds=ms), "duration_ms": ms, "model_ms": ms * 0.7,
                "tool_ms": tool_ms})
            request_id = f"req-{run_id}-{aid}"
            for position, (role, content) in enumerate((("system", "You are a careful agent."), ("user", question),
                                                        ("assistant", None), ("tool", '{"value": 1}'),
                                                        ("assistant", f"Final Answer: v{t}"))):
                messages.append({"attempt_id": aid, "position": position, "turn": 1 if position < 4 else 2,
                                 "role": role, "content": content,
                                 "tool_calls": [{"id": f"c{aid}", "type": "function", "function": {
                                     "name": "diag-echo", "arguments": '{"value": 1}'}}] if position == 2 else None,
                                 "tool_call_id": f"c{aid}" if role == "tool" else None})
            calls.append({"attempt_id": aid, "turn": 1, "call_id": f"c{aid}", "name": "diag-echo",
                          "action": "diag:echo", "arguments": '{"value": 1}', "params": {"value": 1}, "code": 0,
                          "result": '{"value": 1}', "result_chars": 12, "duration_ms": tool_ms, "trace_id": trace,
                          "request_id": request_id})
            audit.append({"id": cid, "request_id": request_id, "trace_id": trace, "worker_id": f"ro-{run_id}-w{s}",
                          "resource_type": "diag", "action": "diag:echo" if t % 3 else "bash:run",
                          "params": {"value": 1}, "code": 0 if rng.random() > 0.03 else 2001, "message": "",
                          "result": '{"value": 1}', "result_size": 12, "result_sha256": "0" * 64,
                          "started_at": started, "duration_ms": tool_ms, "server_pid": 1, "node_id": "node-1"})
            aid += 1
            cid += 1
    return attempts, messages, calls, audit


def build(target: Path | str, tasks: int = 10_000, samples: int = 4) -> str:
    """Write the runs into ``target``, a new sqlite file or an empty PostgreSQL database's
    URL; returns the database URL."""
    from agentflow.db import make_engine, upgrade
    from agentflow.db.models import ToolCall
    from agentflow.db.rollout import RolloutAttempt, RolloutMessage, RolloutRun, RolloutToolCall
    from agentflow.rollout.store import summarize
    from agentflow.view.data.rollout import SUMMARY_COLUMNS

    url = target if isinstance(target, str) else f"sqlite:///{target}"
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(7)
    start = dt.datetime(2025, 1, 1, 12, 0, 0)
    next_id, next_audit = 1, 1
    with engine.begin() as conn:
        for run_id, n, model in ((BIG_A, samples, "big-model-a"), (BIG_B, 1, "big-model-b")):
            spec = {"config": {"n_samples": n, "model_name": model, "benchmark_name": BENCHMARK},
                    "scoring": True, "metric": "exact_match",
                    "dataset": {"path": "big.jsonl", "sha256": "0" * 64, "task_ids": [f"task-{t:05d}" for t in range(tasks)]}}
            conn.execute(insert(RolloutRun.__table__), [{
                "id": run_id, "benchmark_name": BENCHMARK, "status": "running", "model_name": model,
                "data_path": "big.jsonl", "fingerprint": "f" * 64, "fingerprint_version": 1, "spec": spec,
                "total_tasks": tasks * n, "created_at": start, "updated_at": start}])
            attempts, messages, calls, audit = _attempt_rows(run_id, tasks, n, rng, start, next_id, next_audit)
            next_id += len(attempts)
            next_audit += len(audit)
            for table, rows in ((RolloutAttempt.__table__, attempts), (RolloutMessage.__table__, messages),
                                (RolloutToolCall.__table__, calls), (ToolCall.__table__, audit)):
                for i in range(0, len(rows), 20_000):
                    conn.execute(insert(table), rows[i:i + 20_000])
            finished = start + dt.timedelta(hours=2)
            run = RolloutRun(id=run_id, benchmark_name=BENCHMARK, status="success", model_name=model, spec=spec,
                             total_tasks=tasks * n, created_at=start, finished_at=finished)
            keys = [c.key for c in SUMMARY_COLUMNS]
            summary = summarize(run, [_Row({k: a.get(k) for k in keys}) for a in attempts])
            conn.execute(RolloutRun.__table__.update().where(RolloutRun.__table__.c.id == run_id).values(
                status="success", finished_at=finished, summary=summary))
    engine.dispose()
    return url


class _Row:
    def __init__(self, values: dict):
        self.__dict__.update(values)


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    if target.exists():
        sys.exit(f"{target} exists")
    print(build(target))
