"""Rollout's task slots share one sandbox connection pool; every task still gets its own
worker, sessions and trajectory."""
from __future__ import annotations

import json

from sqlalchemy import select

from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt
from agentflow.rollout import rollout
from agentflow.sandbox import client as client_mod
from tests.support.fake_openai import FakeOpenAI, FakeOpenAIProcess, call, first_user, last_tool, tool_calls, turn


def file_script(req: dict):
    """Writes the question's word to a file in the task's bash session, then reads every
    file of the workspace back: a session shared between tasks would show two."""
    word = first_user(req).split()[-1]
    if turn(req) == 0:
        return tool_calls(call("bash-run", {"command": f"echo {word} > {word}.txt"}))
    if turn(req) == 1:
        return tool_calls(call("bash-run", {"command": "cat *.txt"}))
    return f"<answer>{json.loads(last_tool(req))['stdout'].strip()}</answer>"


def test_slots_share_one_pool_and_keep_trajectories_apart(server, make_config, monkeypatch):
    built = []
    real_init = client_mod.HTTPServiceClient.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(client_mod.HTTPServiceClient, "__init__", counting_init)
    tasks = [{"id": f"s{i}", "question": f"say w{i}", "answer": f"w{i}"} for i in range(12)]
    with FakeOpenAI(file_script) as fake:
        cfg = make_config(tasks, max_workers=6, base_url=fake.base_url, available_tools=["bash:run"])
        summary = rollout(cfg, progress=False)
    assert summary["status"] == "success" and summary["accuracy"] == 1.0
    assert len(built) == 1  # one pool for the six slots (not one per slot)
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        attempts = s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == cfg["run_id"])).all()
        assert len(attempts) == 12 and len({a.trace_id for a in attempts}) == 12
        assert len({a.worker_id for a in attempts}) == 6
        for a in attempts:
            word = a.question.split()[-1]
            assert [m.role for m in a.messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
            assert a.messages[0].content == a.question
            assert [json.loads(c.result)["stdout"] for c in a.tool_calls] == ["", f"{word}\n"]
            assert all(c.trace_id == a.trace_id for c in a.tool_calls)
            assert len({c.session_id for c in a.tool_calls}) == 1
        # each task had a session of its own (closed at its end, a new one for the next task)
        assert len({a.tool_calls[0].session_id for a in attempts}) == 12
    engine.dispose()


def echo_word(req: dict):
    return f"<answer>{first_user(req).split()[-1]}</answer>"


def test_fake_model_in_its_own_process_keeps_connections_alive(make_config):
    import openai

    with FakeOpenAIProcess(echo_word) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
        replies = [client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"say v{i}"}])
                   for i in range(3)]
        assert [r.choices[0].message.content for r in replies] == [f"<answer>v{i}</answer>" for i in range(3)]
        assert replies[0].usage.total_tokens > 0 and fake.request_count() == 3
        assert fake.connection_count() == 1  # one kept-alive connection served all three
