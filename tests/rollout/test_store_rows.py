"""add_attempt stores exactly what the agent produced (Core inserts, read back by the ORM)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from agentflow.db import make_engine, make_session_factory, upgrade
from agentflow.db.rollout import RolloutAttempt, RolloutRun
from agentflow.llm import Usage
from agentflow.rollout.agent import AgentResult
from agentflow.rollout.metrics import Score
from agentflow.rollout.store import add_attempt, trajectory_row
from agentflow.rollout.tasks import Task

MESSAGES = [
    {"role": "system", "content": "be brief", "turn": 0},
    {"role": "user", "content": "say w", "turn": 0},
    {"role": "assistant", "content": None, "turn": 1, "prompt_tokens": 3, "completion_tokens": 4,
     "cached_prompt_tokens": 1, "latency_ms": 12.5, "finish_reason": "tool_calls",
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "diag-echo", "arguments": '{"value": "w"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"value": "w"}', "turn": 1},
    {"role": "assistant", "content": "<answer>w</answer>", "turn": 2, "prompt_tokens": 5, "completion_tokens": 2,
     "cached_prompt_tokens": 0, "latency_ms": 9.0, "finish_reason": "stop"},
]
CALLS = [
    {"turn": 1, "call_id": "c1", "name": "diag-echo", "action": "diag:echo", "arguments": '{"value": "w"}',
     "params": {"value": "w"}, "code": 0, "error": None, "result": '{"value": "w"}', "result_chars": 14,
     "prompt_truncated": False, "duration_ms": 2.5, "trace_id": "tr-1", "request_id": "rq-1", "session_id": None},
    {"turn": 1, "call_id": "c2", "name": "nope", "action": None, "arguments": "", "params": None, "code": None,
     "error": "unknown", "result": "unknown", "result_chars": 7, "prompt_truncated": True, "duration_ms": 0.0,
     "trace_id": "tr-1", "request_id": None, "session_id": "s-1"},
]


def test_attempt_messages_and_calls_round_trip(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    engine = make_engine(url, immediate=True)
    sessions = make_session_factory(engine)
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, 600000)
    result = AgentResult(status="completed", prediction="w", final_response="<answer>w</answer>", turns=2,
                         messages=MESSAGES, tool_calls=CALLS, usage=Usage(8, 6, 14, 1), model_ms=21.5, tool_ms=2.5,
                         started_at=t0, finished_at=t0 + dt.timedelta(seconds=1), duration_ms=1000.0)
    task = Task(id="t1", question="say w", answer=["w", "W"], kwargs={"k": 1}, metadata={"level": 2})
    with sessions() as s:
        s.add(RolloutRun(id="r1", benchmark_name="b", status="running", model_name="m", data_path="d",
                         fingerprint="f", fingerprint_version=1, total_tasks=1, output_dir="o", spec={}))
        s.flush()
        attempt_id = add_attempt(s, run_id="r1", task=task, sample_index=0, attempt=1, result=result,
                                 score=Score(1.0, {"how": "em"}), metric="exact_match", trace_id="tr-1",
                                 worker_id="w0")
        s.commit()
    with sessions() as s:
        a = s.get(RolloutAttempt, attempt_id)
        assert (a.run_id, a.task_id, a.sample_index, a.attempt, a.status) == ("r1", "t1", 0, 1, "completed")
        assert (a.question, a.ground_truth, a.task_metadata) == ("say w", ["w", "W"], {"kwargs": {"k": 1}, "level": 2})
        assert (a.prediction, a.final_response, a.metric, a.score, a.scored, a.score_details) == \
            ("w", "<answer>w</answer>", "exact_match", 1.0, True, {"how": "em"})
        assert (a.error, a.turns, a.tool_call_count) == (None, 2, 2)
        assert (a.prompt_tokens, a.completion_tokens, a.total_tokens, a.cached_prompt_tokens) == (8, 6, 14, 1)
        assert (a.trace_id, a.worker_id, a.started_at, a.finished_at) == ("tr-1", "w0", t0, t0 + dt.timedelta(seconds=1))
        assert (a.duration_ms, a.model_ms, a.tool_ms) == (1000.0, 21.5, 2.5)
        stored = [{k: getattr(m, k) for k in ("role", "content", "tool_calls", "tool_call_id", "prompt_tokens",
                                              "completion_tokens", "cached_prompt_tokens", "latency_ms",
                                              "finish_reason")} | {"turn": m.turn} for m in a.messages]
        assert [m.position for m in a.messages] == list(range(len(MESSAGES)))
        assert stored == [{"tool_calls": None, "tool_call_id": None, "prompt_tokens": None, "completion_tokens": None,
                           "cached_prompt_tokens": None, "latency_ms": None, "finish_reason": None, **m}
                          for m in MESSAGES]
        calls = [{k: getattr(c, k) for k in CALLS[0]} for c in a.tool_calls]
        assert calls == CALLS
        assert trajectory_row(a)["messages"][2]["tool_calls"] == MESSAGES[2]["tool_calls"]
        # a message without tool calls holds JSON null there, as the ORM inserts of before stored it
        nulls = s.execute(text("SELECT count(*) FROM rollout_messages WHERE tool_calls = 'null'")).scalar()
        assert nulls == 4
    engine.dispose()
