"""A real AgentFlow database for the viewer's tests, made by real runs with scripted models.

:func:`build` runs ``agentflow demo`` (the real command, on a scripted model given by
``--base-url``), then, on a sandbox server over the same data folder, two rollouts of one
benchmark (the first with 2 samples per task, the second resumed once, so one task has
two attempts) whose tasks cover what a trajectory can
hold — right and wrong answers, a failed tool call, an unknown tool, arguments that are
not JSON, an image, hostile HTML, a task that runs out of turns — and a synthesis whose
trees have duplicate-refused proposals, selected paths, and accepted and rejected QA.
The first rollout and the synthesis are priced (the second rollout's model has no price:
its cost is unknown); the first rollout is rescored with f1; the synthesis's accepted QA
are exported as a benchmark and run by a third rollout (``view-qa``, 2 samples each,
solved once of 2), so each QA pair has a difficulty.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

from tests.rollout.conftest import write_tasks
from tests.support.fake_openai import FakeOpenAI, call, first_user, http_error, last_tool, tool_calls, turn
from tests.support.server import REPO, start_server
from tests.synthesis.conftest import echo_qa, is_qa, refusals, step_of

BENCHMARK = "view-bench"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def png_base64(width: int = 24, height: int = 16) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 220)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


TASKS = [
    {"id": "say-0", "question": "say w0", "answer": "w0"},
    {"id": "say-1", "question": "say w1", "answer": "w1"},
    {"id": "wrong", "question": "say x", "answer": ["nope", "never"]},
    {"id": "tool-fails", "question": "fail then say w2", "answer": "w2"},
    {"id": "unknown-tool", "question": "use a missing tool then say w3", "answer": "w3"},
    {"id": "bad-json", "question": "send bad json then say w4", "answer": "w4"},
    {"id": "image", "question": "show an image then say w5", "answer": "w5"},
    {"id": "hostile", "question": f"echo {HOSTILE} then say w6", "answer": "w6"},
    {"id": "loops", "question": "loop forever", "answer": "never"},
]


def agent_script(model: str):
    """The rollout agent. Model ``a`` answers as TASKS expect, except that it gets
    ``say-1`` wrong on every second sample; model ``b`` gets ``say-0`` wrong and ``wrong``
    right, and its requests for ``loops`` fail with HTTP 400 (an infrastructure error)."""
    answered: dict[str, int] = {}
    lock = threading.Lock()

    def script(req: dict):
        q = first_user(req)
        word = q.split()[-1]
        if model == "b" and q == "loop forever":
            return http_error(400, "scripted bad request")
        if q == "loop forever":
            return tool_calls(call("diag-echo", {"value": f"again {turn(req)}"}))
        if turn(req) == 0:
            if q.startswith("fail"):
                return tool_calls(call("diag-echo", {"value": "boom", "fail": True}))
            if q.startswith("use a missing"):
                return tool_calls(call("no-such-tool", {"x": 1}))
            if q.startswith("send bad json"):
                return tool_calls(call("diag-echo", '{"value": oops'))
            if q.startswith("show an image"):
                return tool_calls(call("diag-echo", {"value": {"image": png_base64(), "mime_type": "image/png"}}))
            if q.startswith("echo "):
                return tool_calls(call("diag-echo", {"value": HOSTILE}), content=f"I will echo {HOSTILE}")
            return tool_calls(call("diag-echo", {"value": word}), call("bash-run", {"command": f"echo {word}"}))
        if model == "b" and q == "say w0":
            return "Final Answer: w9"
        if model == "b" and q == "say x":
            return "Final Answer: nope"
        with lock:
            answered[q] = answered.get(q, 0) + 1
        if model == "a" and q == "say w1" and answered[q] % 2 == 0:
            return "Final Answer: w8"
        if q.startswith("echo "):
            return f"{HOSTILE}\nFinal Answer: {word}"
        if q.startswith(("say", "fail", "use", "send", "show")):
            return f"Final Answer: {word}"
        return f"Final Answer: {json.loads(last_tool(req)).get('stdout', '').strip()}"

    return script


def demo_script():
    """``agentflow demo``'s agent (rag search, then an answer; a QA pair from the searches)."""
    counter = iter(range(10_000))

    def script(req: dict):
        names = [t["function"]["name"] for t in req.get("tools") or []]
        if "submit_qa" in names:
            return tool_calls(call("submit_qa", {"question": "Which module of the standard library implements a heap "
                                                             "queue, as found by the searches?",
                                                 "answer": "heapq", "reasoning_steps": ["search 1", "search 2"]}))
        if "stop_branch" in names:
            return tool_calls(call("rag-search", {"query": f"heapq push pop {next(counter)}"}))
        if turn(req) == 0:
            return tool_calls(call("rag-search", {"query": first_user(req)}))
        return "<answer>128</answer>"

    return script


def synthesis_script():
    """Echo exploration (trees of depth 3, two branches at depth 1). At depth 2 both
    chains first propose one action, so the second is refused as a duplicate; at depth 3
    the chain under branch 0 proposes only a taken action (its node is ``failed``) and the
    other one makes a tool call that fails. QA leaks its answer on the "leaky" seed."""
    def script(req: dict):
        if is_qa(req):
            text = req["messages"][-1]["content"]
            if "leaky" in text:
                values = re.findall(r'"value": "([^"]+)"', text)
                return echo_qa(req, question=f"Which value, {values[-1]}, ends the chain that starts here?",
                               answer=values[-1])
            return echo_qa(req)
        depth, branch = step_of(req)
        retry = refusals(req)
        if depth == 1:
            return tool_calls(call("diag-echo", {"value": f"v1-{branch}"}), content=f"look at branch {branch}")
        if depth == 2:
            value = "shared" if retry == 0 else f"v2-{json.dumps(req['messages']).count('v1-0')}-{retry}"
            return tool_calls(call("diag-echo", {"value": value}), content="go deeper")
        if '"v1-0"' in json.dumps(req["messages"]):
            return tool_calls(call("diag-echo", {"value": "shared"}), content="try the shared value again")
        return tool_calls(call("diag-echo", {"value": "bad", "fail": True}), content="this one fails")

    return script


@dataclasses.dataclass
class Built:
    home: Path
    url: str
    demo_output: str
    demo_rollout: str
    demo_synthesis: str
    rollout_a: str
    rollout_b: str
    synthesis: str
    rollout_qa: str = "view-qa"


PRICE = {"prompt": 3.0, "completion": 15.0}


def _qa_rollout(home: Path, url: str, server) -> None:
    """Rescore view-a with f1; export view-synth's QA as a benchmark and run it with 2
    samples per task: the first answer to each question is right, the second wrong."""
    from agentflow.db import make_engine, make_session_factory
    from agentflow.rollout import rollout
    from agentflow.rollout.rescore import rescore_run
    from agentflow.synthesis.benchmark import export_benchmark

    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        rescore_run(s, "view-a", "f1")
        s.commit()
        written = export_benchmark(s, "view-synth", home / "synth-benchmark.jsonl")
    engine.dispose()
    answers = {line["question"]: line["answer"] for line in written["lines"]}
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def script(req):
        question = next(q for q in answers if q in first_user(req))
        with lock:
            seen[question] = seen.get(question, 0) + 1
            first = seen[question] == 1
        return f"Final Answer: {answers[question] if first else 'wrong'}"

    with FakeOpenAI(script) as fake:
        rollout({"benchmark_name": "view-synth-qa", "data_path": written["file"], "available_tools": ["diag:echo"],
                 "sandbox_server_url": server.url, "database_url": url, "output_dir": str(home / "out"),
                 "model_name": "strong", "base_url": fake.base_url, "run_id": "view-qa", "n_samples": 2,
                 "max_retries": 1, "max_workers": 2}, progress=False)


def build(home: Path) -> Built:
    """Make the database in ``home`` (about 15 s)."""
    home.mkdir(parents=True, exist_ok=True)
    with FakeOpenAI(demo_script(), model="scripted") as fake:
        proc = subprocess.run([sys.executable, "-m", "agentflow.cli", "demo", "--home", str(home), "--base-url",
                               fake.base_url, "--model", "scripted", "--api-key", "k", "--tasks", "2", "--seeds", "1",
                               "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    demo = json.loads((home / "demo.json").read_text())
    url = f"sqlite:///{home / 'agentflow.db'}"
    from agentflow.rollout import rollout
    from agentflow.synthesis import synthesize

    server = start_server(home)
    try:
        data = write_tasks(home / "view-tasks.jsonl", TASKS)
        common = {"benchmark_name": BENCHMARK, "data_path": str(data), "available_tools": ["diag:echo", "bash:run"],
                  "sandbox_server_url": server.url, "database_url": url, "output_dir": str(home / "out"),
                  "max_retries": 1, "max_turns": 3, "max_workers": 3}
        with FakeOpenAI(agent_script("a")) as fake:
            rollout({**common, "model_name": "model-a", "base_url": fake.base_url, "run_id": "view-a",
                     "n_samples": 2, "pricing": {"model-a": PRICE}}, progress=False)
        with FakeOpenAI(agent_script("b")) as fake:
            b = {**common, "model_name": "model-b", "base_url": fake.base_url, "run_id": "view-b"}
            rollout(b, progress=False)
            rollout({**b, "resume": True}, progress=False)  # retries "loops": a second attempt, failing again
        with FakeOpenAI(synthesis_script()) as fake:
            synthesize({"model_name": "fake-model", "sandbox_server_url": server.url, "database_url": url,
                        "output_dir": str(home / "out"), "run_id": "view-synth", "max_retries": 1, "max_depth": 3,
                        "branching_factor": 2, "depth_threshold": 1, "min_depth": 2, "max_selected_traj": 2,
                        "available_tools": ["diag:echo"], "temperature": 0.0, "min_hops": 2,
                        "base_url": fake.base_url, "pricing": {"fake-model": PRICE}},
                       seeds=["leaky seed", "honest seed"])
        _qa_rollout(home, url, server)
    finally:
        server.stop()
    return Built(home, url, proc.stdout, demo["rollout"]["run_id"], demo["synthesis"]["run_id"], "view-a", "view-b",
                 "view-synth")
