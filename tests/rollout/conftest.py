"""Helpers for rollout tests: task files, an echo agent script, a config builder."""
from __future__ import annotations

import json
import uuid

import pytest

from tests.support.fake_openai import call, first_user, last_tool, tool_calls, turn


def write_tasks(path, tasks: list[dict]):
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def echo_script(req: dict):
    """An agent that echoes the question's last word with diag:echo and bash:run (two
    calls in one turn), then answers with bash's stdout."""
    if turn(req) == 0:
        word = first_user(req).split()[-1]
        return tool_calls(call("diag-echo", {"value": word}), call("bash-run", {"command": f"echo {word}"}))
    return f"Final Answer: {json.loads(last_tool(req))['stdout'].strip()}"


@pytest.fixture
def make_config(server, tmp_path):
    """``make_config(tasks, **keys)`` → a config dict for a rollout on the shared server."""

    def make(tasks: list[dict], **keys):
        data = write_tasks(tmp_path / f"tasks-{uuid.uuid4().hex[:6]}.jsonl", tasks)
        cfg = {"benchmark_name": "test", "model_name": "fake-model", "data_path": str(data),
               "available_tools": ["diag:echo", "bash:run"], "sandbox_server_url": server.url,
               "database_url": server.db_url, "output_dir": str(tmp_path / "out"),
               "run_id": f"t-{uuid.uuid4().hex[:10]}", "max_retries": 2}
        cfg.update(keys)
        return cfg

    return make
