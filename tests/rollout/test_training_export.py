"""``agentflow runs export RUN --format ...``: training records from a real rollout run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from agentflow.cli import main
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutRun
from agentflow.rollout import rollout
from agentflow.rollout.training import model_messages
from tests.support.fake_openai import FakeOpenAI, call, first_user, tool_calls, turn

CAP = 100
TASKS = [{"id": "t0", "question": "say w0", "answer": "w0"},
         {"id": "t1", "question": "say w1", "answer": "nope"},
         {"id": "kw", "question": "say w3", "answer": "w3", "kwargs": {"value": "injected"}},
         {"id": "loop", "question": "loop w4", "answer": "w4"}]


def script(req: dict):
    """Two tool calls in the first turn (the first answer is longer than CAP, so the model
    sees it truncated), then the question's last word; "loop" never stops calling.
    Only diag:echo is called: its answers are the same on every sample, while bash's
    carry run-dependent fields (the length of its result differs between samples), so
    a trajectory with bash is never a duplicate."""
    question = first_user(req)
    word = question.split()[-1]
    if turn(req) == 0 or question.startswith("loop"):
        return tool_calls(call("diag-echo", {"value": f"{word} {'x' * 300}"}), call("diag-echo", {"value": word}))
    return f"Final Answer: {word}"


@pytest.fixture
def run(server, make_config):
    with FakeOpenAI(script) as agent:
        cfg = make_config(TASKS, base_url=agent.base_url, n_samples=2, max_turns=2, max_tool_output_chars=CAP)
        summary = rollout(cfg, progress=False)
        assert summary["outcomes"] == {"completed": 6, "max_turns": 2}
        yield cfg, agent.requests


def _export(server, cfg, tmp_path, fmt, *flags, name=None):
    out = tmp_path / (name or f"{fmt}.jsonl")
    assert main(["runs", "export", cfg["run_id"], "--format", fmt, "--output", str(out),
                 "--database-url", server.db_url, *flags]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()], out


def _attempts(server, run_id) -> dict:
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        rows = s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id)
                         .options(selectinload(RolloutAttempt.messages), selectinload(RolloutAttempt.tool_calls)))
        out = {(a.task_id, a.sample_index, a.attempt): (a, model_messages(a), [c.name for c in a.tool_calls],
                                                         [c.result for c in a.tool_calls]) for a in rows}
        spec = s.get(RolloutRun, run_id).spec
    engine.dispose()
    return out, spec


MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])
TOOLS = TypeAdapter(list[ChatCompletionToolParam])
ROLE_KEYS = {"system": {"role", "content"}, "user": {"role", "content"},
             "assistant": {"role", "content", "tool_calls"}, "tool": {"role", "content", "tool_call_id"}}


def validate_finetuning_line(line: str) -> dict:
    """The checks of OpenAI's chat fine-tuning file format: only the keys it accepts,
    known roles with their keys, content text (or none beside tool calls), tool calls
    as ``{id, type: function, function: {name, arguments: JSON text}}``, every tool
    message answering a call of the assistant turn before it, every call answered, and
    an assistant message last. The messages and tools also load as the ``openai``
    package's request types."""
    record = json.loads(line)
    assert set(record) <= {"messages", "tools", "parallel_tool_calls"}, set(record)
    messages = record["messages"]
    MESSAGES.validate_python(messages)
    if "tools" in record:
        TOOLS.validate_python(record["tools"])
        for t in record["tools"]:
            assert t["type"] == "function" and isinstance(t["function"]["parameters"], dict)
    open_calls: set[str] = set()
    for m in messages:
        assert m["role"] in ROLE_KEYS and set(m) <= ROLE_KEYS[m["role"]], m
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, "a tool message must answer a call of the turn before"
            open_calls.remove(m["tool_call_id"])
            assert isinstance(m["content"], str)
            continue
        assert not open_calls, f"calls {open_calls} were never answered"
        if m.get("tool_calls"):
            for c in m["tool_calls"]:
                assert c["type"] == "function" and isinstance(c["id"], str) and isinstance(c["function"]["name"], str)
                json.loads(c["function"]["arguments"])
                open_calls.add(c["id"])
            assert m["content"] is None or isinstance(m["content"], str)
        else:
            assert isinstance(m["content"], str) and m["content"]
    assert messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls")
    return record


def load_sharegpt(record: dict) -> list[dict]:
    """Read a ShareGPT record as LLaMA-Factory's converter does (turns alternate: human or
    observation at even positions, gpt or function_call at odd ones) back into messages
    of names and texts."""
    tools = json.loads(record["tools"])
    assert all(isinstance(t["name"], str) and "parameters" in t for t in tools)
    out = []
    for i, t in enumerate(record["conversations"]):
        assert t["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call")), (i, t)
        if t["from"] == "function_call":
            calls = json.loads(t["value"])
            out.append({"calls": [calls] if isinstance(calls, dict) else calls})
        elif t["from"] == "observation":
            value = t["value"]
            out.append({"results": json.loads(value) if value.startswith('["') else [value]})
        else:
            out.append({"text": t["value"]})
    return out


def test_run_stores_the_tool_schemas_it_offers(server, run):
    cfg, requests = run
    _, spec = _attempts(server, cfg["run_id"])
    plain = next(r for r in requests if first_user(r) == "say w0")
    assert spec["tools"] == plain["tools"]


def test_openai_chat_lines_are_what_the_model_saw_and_validate(server, run, tmp_path, capsys):
    cfg, requests = run
    records, out = _export(server, cfg, tmp_path, "openai-chat", "--outcome", "completed")
    assert "wrote 6 openai-chat records" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    for line in lines:
        validate_finetuning_line(line)
    provenance = [json.loads(p) for p in (tmp_path / "openai-chat.provenance.jsonl").read_text().splitlines()]
    assert len(provenance) == len(records) == 6
    attempts, _ = _attempts(server, cfg["run_id"])
    for record, prov in zip(records, provenance):
        a, messages, *_ = attempts[(prov["task_id"], prov["sample"], prov["attempt"])]
        assert prov["trace_id"] == a.trace_id and prov["run_id"] == cfg["run_id"] and prov["outcome"] == "completed"
        assert record["messages"] == messages
        # exactly the last request the model got for it (same messages and tools), then its answer
        sent = [r for r in requests if r["messages"] == record["messages"][:-1]]
        assert sent and all(r["tools"] == record["tools"] for r in sent)
        tool_texts = [m["content"] for m in record["messages"] if m["role"] == "tool"]
        if prov["task_id"] != "kw":  # (kw's injected value is short)
            assert f"[output truncated: showing {CAP} of " in tool_texts[0]  # capped as it was shown
    kw = next(r for r, p in zip(records, provenance) if p["task_id"] == "kw")
    echo = next(t for t in kw["tools"] if t["function"]["name"] == "diag-echo")
    assert "value" not in echo["function"]["parameters"]["properties"]  # the injected kwarg is not offered


def test_sharegpt_round_trips_through_its_loader(server, run, tmp_path):
    cfg, _ = run
    records, _ = _export(server, cfg, tmp_path, "sharegpt", "--outcome", "completed")
    attempts, _ = _attempts(server, cfg["run_id"])
    assert len(records) == 6
    for record in records:
        a, messages, names, results = attempts[(record["task_id"], record["sample"], record["attempt"])]
        loaded = load_sharegpt(record)
        assert loaded[0] == {"text": a.question}
        assert [c["name"] for c in loaded[1]["calls"]] == names
        tool_texts = [m["content"] for m in messages if m["role"] == "tool"]
        assert loaded[2]["results"] == tool_texts  # as the model saw them (capped)
        if record["task_id"] != "kw":
            assert tool_texts[0] != results[0] and tool_texts[0].startswith(results[0][:CAP])
        assert loaded[-1] == {"text": messages[-1]["content"]}
        assert record["trace_id"] == a.trace_id and record["score"] == a.score


def test_sft_jsonl_filters_and_dedup(server, run, tmp_path):
    cfg, _ = run
    attempts, _ = _attempts(server, cfg["run_id"])
    every, _ = _export(server, cfg, tmp_path, "sft-jsonl", name="all.jsonl")
    assert len(every) == 8 and {r["outcome"] for r in every} == {"completed", "max_turns"}
    for r in every:
        a, messages, *_ = attempts[(r["task_id"], r["sample"], r["attempt"])]
        assert r["messages"] == messages and r["trace_id"] == a.trace_id and r["score"] == a.score
        assert r["question"] == a.question and r["answer"] == a.ground_truth and r["tools"]
    good, _ = _export(server, cfg, tmp_path, "sft-jsonl", "--min-score", "1", name="good.jsonl")
    assert sorted({(r["task_id"], r["score"]) for r in good}) == [("kw", 1.0), ("t0", 1.0)] and len(good) == 4
    # the two samples of a task are the same trajectory but for the tool call ids the model drew
    assert good[0]["messages"] != good[1]["messages"]
    unique, _ = _export(server, cfg, tmp_path, "sft-jsonl", "--min-score", "1", "--dedup", name="unique.jsonl")
    assert [(r["task_id"], r["sample"]) for r in unique] == [("t0", 0), ("kw", 0)]


def test_export_scores_follow_the_newest_rescoring(server, run, tmp_path):
    cfg, _ = run
    db = ["--database-url", server.db_url]
    assert main(["runs", "rescore", cfg["run_id"], "--metric", "contains_answer", *db]) == 0
    records, _ = _export(server, cfg, tmp_path, "sft-jsonl", "--min-score", "0.5")
    assert {r["metric"] for r in records} == {"contains_answer"} and all(r["scoring_id"] for r in records)


def test_export_bad_input(server, run, tmp_path, capsys):
    cfg, _ = run
    db = ["--database-url", server.db_url]
    base = ["runs", "export", cfg["run_id"], "--output", str(tmp_path / "x.jsonl"), *db]
    assert main(["runs", "export", "missing-run", "--format", "sft-jsonl", *db]) == 2
    assert "no rollout run 'missing-run'" in capsys.readouterr().err
    assert main([*base, "--format", "alpaca"]) == 2
    assert "unknown export format 'alpaca'; known: openai-chat, sharegpt, sft-jsonl" in capsys.readouterr().err
    for bad, says in (("abc", "must be a number between 0 and 1, got 'abc'"), ("1.5", "between 0 and 1"),
                      ("nan", "got nan")):
        assert main([*base, "--format", "sft-jsonl", "--min-score", bad]) == 2
        assert says in capsys.readouterr().err
    assert main([*base, "--format", "sft-jsonl", "--outcome", "finished"]) == 2
    assert "unknown outcome 'finished'" in capsys.readouterr().err
    assert main(["runs", "export", cfg["run_id"], "--min-score", "0.5", *db]) == 2
    assert "--min-score only apply with --format" in capsys.readouterr().err
    assert not Path(tmp_path / "x.jsonl").exists()


def test_the_documented_records_load():
    """docs/rollout.md shows one record of each format: each passes its loader."""
    import re

    text = (Path(__file__).parents[2] / "docs" / "rollout.md").read_text()
    chat, prov, sharegpt, sft = re.findall(r"```json\n(.*?)\n```", text[text.index("**Training export.**"):], re.S)[:4]
    record = validate_finetuning_line(chat)
    assert set(json.loads(prov)) >= {"run_id", "task_id", "sample", "attempt", "trace_id", "score"}
    assert [t.get("from") for t in json.loads(sharegpt)["conversations"]] == ["human", "function_call",
                                                                               "observation", "gpt"]
    load_sharegpt(json.loads(sharegpt))
    assert json.loads(sft)["messages"] == record["messages"]
