"""A rollout whose agent (the scripted OpenAI-compatible model) calls MCP tools: the
Python ``mcp-server-time`` and the Node ``server-everything``, through the sandbox."""
from __future__ import annotations

import json
import sqlite3

from agentflow.rollout import rollout
from tests.mcp.conftest import TOKEN
from tests.rollout.conftest import write_tasks
from tests.support.fake_openai import FakeOpenAI, call, last_tool, tool_calls, turn


def _script(req: dict):
    names = {t["function"]["name"] for t in req.get("tools") or []}
    assert {"mcp-time_get_current_time", "mcp-everything_get-sum"} <= names, names
    if turn(req) == 0:
        return tool_calls(call("mcp-time_get_current_time", {"timezone": "Asia/Tokyo"}),
                          call("mcp-everything_get-sum", {"a": 40, "b": 2}))
    total = last_tool(req)
    return f"Final Answer: {json.loads(total)['text'].split()[-1]}"


def test_an_agent_uses_mcp_tools_in_a_rollout(mcp_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTFLOW_API_TOKEN", TOKEN)
    data = write_tasks(tmp_path / "tasks.jsonl", [{"id": "sum", "question": "What is 40 + 2?", "answer": "42"}])
    with FakeOpenAI(_script) as fake:
        summary = rollout({"benchmark_name": "mcp", "model_name": "fake-model", "base_url": fake.base_url,
                           "api_key": "x", "data_path": str(data), "sandbox_server_url": mcp_server.url,
                           "available_tools": ["mcp:time.*", "mcp:everything.get-sum"],
                           "database_url": f"sqlite:///{tmp_path / 'runs.db'}", "output_dir": str(tmp_path / "out"),
                           "run_id": "mcp-rollout", "evaluation_metric": "exact_match"}, progress=False)
    assert summary["accuracy"] == 1.0 and summary["completed"] == 1, summary
    db = sqlite3.connect(mcp_server.home / "agentflow.db")
    actions = sorted(r[0] for r in db.execute("SELECT action FROM tool_calls WHERE code = 0 AND action LIKE 'mcp:%' "
                                               "AND (params LIKE '%Asia/Tokyo%' OR params LIKE '%40%')"))
    assert actions == ["mcp:everything.get-sum", "mcp:time.get_current_time"], actions
