"""Synthesis end to end: scripted fake model, real sandbox server, real database."""
from __future__ import annotations

import collections
import json

import pytest
from sqlalchemy import select, text

from agentflow.db import make_engine, make_session_factory
from agentflow.db.synthesis import SynthesisNode, SynthesisPath, SynthesisQA, SynthesisRun, SynthesisSeed
from agentflow.synthesis import FingerprintMismatch, SynthesisError, load_seeds, synthesize
from tests.support.fake_openai import FakeOpenAI
from tests.synthesis.conftest import echo_explorer, echo_qa, rag_explorer, read_jsonl


def _session(server):
    engine = make_engine(server.db_url)
    return engine, make_session_factory(engine)()


def test_full_run_over_shipped_seeds_makes_the_tree_and_qa(server, make_config):
    with FakeOpenAI(rag_explorer) as fake:
        cfg = make_config(base_url=fake.base_url, available_tools=["rag-search"], seeds_file="seeds/rag/seeds.jsonl",
                          number_of_seed=3, max_workers=2)
        rep = synthesize(cfg)
    assert rep["status"] == "success", rep
    assert rep["seeds"] == {"total": 3, "done": 3, "by_status": {"done": 3}}
    # per seed: root, 2 children (depth < depth_threshold=1), then one chain each down to max_depth=3
    assert rep["nodes"]["by_kind"] == {"root": 3, "action": 18} and rep["nodes"]["failed_tool_calls"] == 0
    assert rep["paths"] == {"candidates": 6, "selected": 6, "deepest": 3, "min_depth": 2, "max_depth": 3}
    assert rep["qa"] == {"accepted": 6, "rejected": 0, "rejected_by_reason": {}}
    requests = len(fake.requests)

    qa = read_jsonl(rep["qa_file"])
    trajectories = read_jsonl(rep["trajectories_file"])
    assert len(qa) == 6 and len(trajectories) == 6
    seeds = load_seeds("seeds/rag/seeds.jsonl")[:3]
    assert {q["seed"]["content"] for q in qa} == {s.content for s in seeds}
    first = qa[0]
    assert first["model"] == "fake-model" and first["run_id"] == cfg["run_id"]
    assert first["path"]["depth"] == 3 and len(first["tool_calls"]) == 3
    assert all(c["action"] == "rag:search" and c["code"] == 0 and c["request_id"] for c in first["tool_calls"])
    assert first["answer"] in trajectories[0]["steps"][-1]["observation"] or any(
        first["answer"] in t["steps"][-1]["observation"] for t in trajectories)
    assert json.loads(open(rep["report_file"]).read())["qa"]["accepted"] == 6

    engine, session = _session(server)
    with session:
        run = session.get(SynthesisRun, cfg["run_id"])
        assert run.status == "success" and run.report["nodes"]["total"] == 21
        for seed in session.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run.id)):
            nodes = list(session.scalars(select(SynthesisNode).where(SynthesisNode.seed_id == seed.id)))
            assert collections.Counter(n.depth for n in nodes) == {0: 1, 1: 2, 2: 2, 3: 2}
            by_id = {n.id: n for n in nodes}
            for n in nodes:
                if n.depth:
                    assert by_id[n.parent_id].depth == n.depth - 1
                    assert n.intent.startswith("learn about") and n.observation and n.trace_id and n.request_id
                    assert n.finished_at >= n.started_at and n.model_ms > 0 and n.tool_ms > 0
            assert len({n.trace_id for n in nodes if n.depth}) == 1
            paths = list(session.scalars(select(SynthesisPath).where(SynthesisPath.seed_id == seed.id)))
            assert sorted(p.rank for p in paths) == [1, 2] and all(0 < p.score <= 1 for p in paths)
        # every node's tool call is one audit row of the server, joined by request_id
        joined = session.execute(text(
            "SELECT count(*) FROM synthesis_nodes n JOIN tool_calls t ON t.request_id = n.request_id "
            "WHERE n.run_id = :r AND t.trace_id = n.trace_id"), {"r": run.id}).scalar_one()
        assert joined == 18
        refused = sum(len(n.refused) for n in session.scalars(select(SynthesisNode).where(
            SynthesisNode.run_id == run.id)))
        assert requests == 18 + refused + 6  # a model call per node and per refused proposal, one per QA
    engine.dispose()


def test_duplicate_actions_are_refused_even_while_in_flight(server, make_config):
    # both siblings propose the same slow call at the same time; then every chain step
    # proposes an action another branch already made
    def value_of(depth, branch, retry):
        if depth == 1:
            return ("diag-sleep", {"seconds": 0.4}) if retry == 0 else ("diag-echo", {"value": f"b{branch}"})
        return ("diag-echo", {"value": f"deep {depth}" + (f" {branch}" if retry else "")})

    with FakeOpenAI(echo_explorer(value_of)) as fake:
        cfg = make_config(base_url=fake.base_url, available_tools=["diag:echo", "diag:sleep"],
                          max_depth=2, min_depth=1)
        rep = synthesize(cfg, seeds=["one seed"])
    assert rep["status"] == "success"
    engine, session = _session(server)
    with session:
        nodes = list(session.scalars(select(SynthesisNode).where(SynthesisNode.run_id == cfg["run_id"],
                                                                 SynthesisNode.kind == "action")))
    engine.dispose()
    assert len(nodes) == 4
    keys = [n.action_key for n in nodes]
    assert len(set(keys)) == 4  # no action twice in one tree
    assert sorted(n.action for n in nodes if n.depth == 1) == ["diag:echo", "diag:sleep"]
    refused = [r for n in nodes for r in n.refused]
    states = sorted(r["state"] for r in refused if r["reason"] == "duplicate")
    assert states == ["done", "in_flight"]  # the sleep was still running; the deep echo had finished
    # the refusal went back to the model as a tool message
    retried = [r for r in fake.requests if r["messages"][-1]["role"] == "tool"]
    assert retried and all("already taken" in r["messages"][-1]["content"] for r in retried)
    # and taken actions are listed for the model in later prompts
    assert any("already taken elsewhere" in r["messages"][-1]["content"] for r in fake.requests if r["messages"][-1]["role"] == "user")


def test_the_model_can_stop_a_branch(server, make_config):
    explore = echo_explorer(lambda d, b, r: f"v{d}-{b}")

    def script(req):  # the chain under the first depth-1 node ends at depth 2
        last = req["messages"][-2]
        if last["role"] == "tool" and '"v1-0"' in last["content"] and len(req["messages"]) < 7:
            return echo_explorer(lambda d, b, r: None)(req)
        return explore(req)

    with FakeOpenAI(script) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=3, min_depth=2)
        rep = synthesize(cfg, seeds=["stop test"])
    assert rep["nodes"]["by_kind"] == {"root": 1, "action": 4, "stop": 1}
    engine, session = _session(server)
    with session:
        stop = session.scalars(select(SynthesisNode).where(SynthesisNode.run_id == cfg["run_id"],
                                                           SynthesisNode.kind == "stop")).one()
        assert stop.depth == 2 and stop.intent == "enough" and stop.action is None
        paths = list(session.scalars(select(SynthesisPath).where(SynthesisPath.run_id == cfg["run_id"])))
    engine.dispose()
    assert sorted(p.depth for p in paths) == [3]  # the stopped branch (depth 1) is shorter than min_depth


def test_leaked_and_unsupported_answers_are_rejected_with_their_reason(server, make_config):
    def qa(req):
        if "leaky" in req["messages"][-1]["content"]:
            return echo_qa(req, question="Which value, v2-0-0, ends the chain?", answer="v2-0-0")
        return echo_qa(req, answer="a value nowhere in the observations")

    script = echo_explorer(lambda d, b, r: f"v{d}-{b}-{r}", qa=qa)
    with FakeOpenAI(script) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2, max_workers=2)
        rep = synthesize(cfg, seeds=["leaky seed", {"content": "honest seed", "kwargs": {}}])
    assert rep["qa"] == {"accepted": 0, "rejected": 2,
                         "rejected_by_reason": {"answer_leaked": 1, "unsupported_answer": 1}}
    assert read_jsonl(rep["qa_file"]) == []
    traj = read_jsonl(rep["trajectories_file"])
    assert sorted(t["qa"][0]["reason"] for t in traj) == ["answer_leaked", "unsupported_answer"]
    engine, session = _session(server)
    with session:
        rows = {q.reason: q for q in session.scalars(select(SynthesisQA).where(SynthesisQA.run_id == cfg["run_id"]))}
    engine.dispose()
    assert rows["answer_leaked"].checks["answer_leaked"]["ok"] is False
    assert rows["unsupported_answer"].checks["unsupported_answer"]["recall"] < 0.8
    assert rows["unsupported_answer"].raw and rows["unsupported_answer"].model_name == "fake-model"


def test_existing_run_needs_resume_and_a_changed_config_is_refused(make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1)
        assert synthesize(cfg, seeds=["a"])["status"] == "success"
        with pytest.raises(SynthesisError, match="already exists"):
            synthesize(cfg, seeds=["a"])
        with pytest.raises(FingerprintMismatch, match="seeds_sha256"):
            synthesize(cfg, seeds=["b"], resume=True)
        n = len(fake.requests)
        again = synthesize(cfg, seeds=["a"], resume=True, max_workers=4)  # pacing knobs may change
        assert again["status"] == "success" and len(fake.requests) == n  # nothing left to do
        # the stored spec and seeds are enough to resume without a config
        stored = synthesize(run_id=cfg["run_id"], resume=True, database_url=cfg["database_url"],
                            base_url=fake.base_url, sandbox_server_url=cfg["sandbox_server_url"])
        assert stored["status"] == "success" and len(fake.requests) == n


def test_unknown_tools_are_a_clear_error(make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        with pytest.raises(SynthesisError, match="no-such"):
            synthesize(make_config(base_url=fake.base_url, available_tools=["no-such:tool"]), seeds=["a"])
