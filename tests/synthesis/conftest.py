"""Helpers for synthesis tests: scripted explorer/QA models and a config builder."""
from __future__ import annotations

import hashlib
import json
import re
import uuid

import pytest

from tests.support.fake_openai import call, tool_calls

STEP = re.compile(r"Step (\d+) of at most \d+(?:; this is branch (\d+) of (\d+))?")


def is_qa(req: dict) -> bool:
    return any(t["function"]["name"] == "submit_qa" for t in req.get("tools") or [])


def seed_text(req: dict) -> str:
    """The seed content (second line onward of the first user message)."""
    first = next(m["content"] for m in req["messages"] if m["role"] == "user")
    return first.split(":\n", 1)[-1].split("\n\n")[0]


def step_of(req: dict) -> tuple[int, int]:
    """(depth, branch) of a sampling request, from its last user message."""
    user = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
    m = STEP.search(user)
    return int(m.group(1)), int(m.group(2) or 1) - 1


def refusals(req: dict) -> int:
    """How many refusals the current expansion already got (tool messages after the step message)."""
    msgs = req["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return sum(1 for m in msgs[last_user:] if m["role"] == "tool" and m["content"].startswith(("Refused", "Error")))


def rag_explorer(req: dict):
    """Searches the seed's words plus a per-step suffix; writes a QA whose answer is the
    last hit's title and whose question carries a hash tag of the trajectory."""
    if is_qa(req):
        return qa_from_titles(req)
    depth, branch = step_of(req)
    words = seed_text(req).split()
    query = " ".join(words[(depth + branch) % len(words):][:3] + words[:1]) + f" {['example', 'module'][branch]}"
    query += " alt" * refusals(req)
    return tool_calls(call("rag-search", {"query": query, "top_k": 2}), content=f"learn about {query}")


def qa_from_titles(req: dict, answer: str | None = None):
    text = req["messages"][-1]["content"]
    titles = [json.loads(f'"{t}"') for t in re.findall(r'"title": "((?:[^"\\]|\\.)*)"', text)]
    tag = hashlib.sha256(text.encode()).hexdigest()
    answer = answer if answer is not None else (titles[-1] if titles else "nothing")
    question = f"[{' '.join(tag[i:i + 8] for i in range(0, 48, 8))}] Which entry ends the search from {seed_text(req)!r}?"
    return tool_calls(call("submit_qa", {"question": question, "answer": answer,
                                         "reasoning_steps": ["search the topic", "follow the hit", "read the title"]}))


def echo_explorer(value_of=lambda depth, branch, retry: f"v{depth}-{branch}-{retry}", qa=None):
    """Explores with diag:echo; ``value_of(depth, branch, refusals)`` picks the value."""

    def script(req: dict):
        if is_qa(req):
            return qa(req) if qa else echo_qa(req)
        depth, branch = step_of(req)
        value = value_of(depth, branch, refusals(req))
        if value is None:
            return tool_calls(call("stop_branch", {"reason": "enough"}), content="done here")
        return tool_calls(call(value[0], value[1]) if isinstance(value, tuple) else
                          call("diag-echo", {"value": value}), content=f"echo {value}")

    return script


def echo_qa(req: dict, question: str | None = None, answer: str | None = None):
    text = req["messages"][-1]["content"]
    values = re.findall(r'"value": "([^"]+)"', text)
    tag = hashlib.sha1(text.encode()).hexdigest()[:12]
    return tool_calls(call("submit_qa", {
        "question": question or f"Which value closes the chain that starts at {values[0]} ({tag})?",
        "answer": answer or values[-1], "reasoning_steps": ["first echo", "second echo"]}))


@pytest.fixture
def make_config(server, tmp_path):
    """``make_config(**keys)`` → a config dict for a synthesis on the shared server."""

    def make(**keys):
        cfg = {"model_name": "fake-model", "sandbox_server_url": server.url, "database_url": server.db_url,
               "output_dir": str(tmp_path / f"out-{uuid.uuid4().hex[:6]}"), "run_id": f"s-{uuid.uuid4().hex[:10]}",
               "max_retries": 1, "max_depth": 3, "branching_factor": 2, "depth_threshold": 1, "min_depth": 2,
               "max_selected_traj": 2, "available_tools": ["diag:echo"], "temperature": 0.0}
        cfg.update(keys)
        return cfg

    return make


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
