"""A scripted, OpenAI-compatible model for trying rollout and synthesis without a real model.

It serves ``/v1/chat/completions`` and ``/v1/models`` (model ``scripted-demo``) with the
test suite's fake server (``tests/support/fake_openai.py``) and answers deterministically:

* **rollout** (a conversation without synthesis step markers): the first turn calls
  ``rag-search`` with the question; the next turn answers with the title and text of
  the top passage, as ``<answer>…</answer>``;
* **synthesis exploration** ("Step N of at most M"): ``rag-search`` with words of the
  seed and a per-step suffix (so sibling branches differ; a refused duplicate gets
  " alt" added);
* **synthesis QA** (the ``submit_qa`` tool is offered): a question about the seed whose
  answer is the title of the path's last hit.

The documentation's sample outputs of rollout and synthesis come from it::

    python benchmark/scripted_model.py --port 18881 &
    AGENTFLOW_MODEL=scripted-demo OPENAI_BASE_URL=http://127.0.0.1:18881/v1 OPENAI_API_KEY=x \\
      agentflow rollout --config configs/rollout/rag.json --run-id rag-demo --max-workers 8

Only its accuracy is the script's: every tool call goes through the real sandbox server.
Run it from the repository (it imports ``tests.support``, which the ``dev`` extra needs).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_openai import FakeOpenAI, call, tool_calls, turn  # noqa: E402

MODEL = "scripted-demo"
STEP = re.compile(r"Step (\d+) of at most \d+(?:; this is branch (\d+) of (\d+))?")


def _users(req: dict) -> list[str]:
    return [m.get("content") or "" for m in req.get("messages", []) if m.get("role") == "user"]


def _last_tool(req: dict) -> str:
    for m in reversed(req.get("messages", [])):
        if m.get("role") == "tool":
            return m.get("content") or ""
    return ""


def _seed_text(req: dict) -> str:
    return _users(req)[0].split(":\n", 1)[-1].split("\n\n")[0]


def _refusals(req: dict) -> int:
    msgs = req["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return sum(1 for m in msgs[last_user:] if m["role"] == "tool" and (m.get("content") or "").startswith(("Refused", "Error")))


def _qa(req: dict):
    text = req["messages"][-1]["content"]
    titles = [json.loads(f'"{t}"') for t in re.findall(r'"title": "((?:[^"\\]|\\.)*)"', text)]
    tag = hashlib.sha256(text.encode()).hexdigest()
    question = (f"[{' '.join(tag[i:i + 8] for i in range(0, 48, 8))}] "
                f"Which entry ends the search from {_seed_text(req)!r}?")
    return tool_calls(call("submit_qa", {"question": question, "answer": titles[-1] if titles else "nothing",
                                         "reasoning_steps": ["search the topic", "follow the hit", "read the title"]}))


def _explore(req: dict, step: re.Match):
    depth, branch = int(step.group(1)), int(step.group(2) or 1) - 1
    words = _seed_text(req).split() or ["python"]
    query = " ".join(words[(depth + branch) % len(words):][:3] + words[:1]) + f" {['example', 'module'][branch % 2]}"
    query += " alt" * _refusals(req)
    return tool_calls(call("rag-search", {"query": query, "top_k": 2}), content=f"learn about {query}")


def _rollout(req: dict):
    if turn(req) == 0:
        question = _users(req)[-1]
        return tool_calls(call("rag-search", {"query": question[:300], "top_k": 3}), content="search first")
    try:
        hits = json.loads(_last_tool(req)).get("hits") or []
    except (ValueError, AttributeError):  # tool output cut in the prompt: not JSON any more
        hits = [{"title": t, "text": x} for t, x in
                re.findall(r'"title": "((?:[^"\\]|\\.)*)", "text": "((?:[^"\\]|\\.)*)', _last_tool(req))[:1]]
    top = hits[0] if hits else {}
    return f"<answer>{top.get('title', '')}: {top.get('text', '')[:400]}</answer>"


def script(req: dict):
    if any(t["function"]["name"] == "submit_qa" for t in req.get("tools") or []):
        return _qa(req)
    step = STEP.search(_users(req)[-1]) if _users(req) else None
    return _explore(req, step) if step else _rollout(req)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=18881, help="port on 127.0.0.1 (default 18881)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds every reply waits (default 0)")
    args = p.parse_args(argv)
    fake = FakeOpenAI(script, latency=args.latency, model=MODEL)
    _start_on(fake, args.port)
    print(f"scripted model {MODEL!r} on {fake.base_url} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


def _start_on(fake: FakeOpenAI, port: int) -> None:
    """FakeOpenAI.start binds a free port; bind the asked one instead."""
    import threading

    from werkzeug.serving import make_server

    from tests.support.fake_openai import _QuietHandler

    fake._server = make_server("127.0.0.1", port, fake._app(), threaded=True, request_handler=_QuietHandler)
    fake.port = fake._server.server_port
    fake._thread = threading.Thread(target=fake._server.serve_forever, daemon=True, name="scripted-model")
    fake._thread.start()


if __name__ == "__main__":
    sys.exit(main())
