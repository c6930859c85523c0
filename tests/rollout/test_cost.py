"""The model cost of a rollout run: priced per call from the stored token counts."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from agentflow.cli import main
from agentflow.config import ConfigError
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutMessage
from agentflow.llm.pricing import ModelPrice, load_pricing, shipped_pricing_file
from agentflow.rollout import rollout
from agentflow.rollout.config import load_config
from tests.support.fake_openai import FakeOpenAI, Reply, call, first_user, tool_calls, turn

TASKS = [{"id": f"c{i}", "question": f"say v{i}", "answer": f"v{i}"} for i in range(3)]
AGENT_PRICE = {"prompt": 2.0, "completion": 8.0, "cached_prompt": 0.5}
JUDGE_PRICE = {"prompt": 0.4, "completion": 1.6, "cached_prompt": 0.1}


def _usage(prompt: int, completion: int, cached: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def agent_script(req):
    """Token counts that differ per task and turn (and part of each prompt cached), so a
    wrong sum cannot come out right by chance."""
    k = int(first_user(req)[-1])
    if turn(req) == 0:
        return dataclasses.replace(tool_calls(call("diag-echo", {"value": f"v{k}"})),
                                   usage=_usage(1000 + 7 * k, 40 + k, 300 + k))
    return Reply(content=f"Final Answer: v{k}", usage=_usage(1500 + 11 * k, 20 + 3 * k, 1200))


def judge_script(req):
    return Reply(content="CORRECT", usage=_usage(200, 3, 64))


def _price(p: dict, prompt: int, completion: int, cached: int) -> float:
    return ((prompt - cached) * p["prompt"] + cached * p["cached_prompt"] + completion * p["completion"]) / 1e6


def _calls(db_url, run_id) -> list[RolloutMessage]:
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        rows = s.scalars(select(RolloutMessage).join(RolloutAttempt).where(
            RolloutAttempt.run_id == run_id, RolloutMessage.role == "assistant")).all()
        out = [(m.attempt.task_id, m.prompt_tokens, m.completion_tokens, m.cached_prompt_tokens) for m in rows]
    engine.dispose()
    return out


def test_run_and_task_cost_is_the_sum_over_their_calls(server, make_config, capsys):
    with FakeOpenAI(agent_script) as agent, FakeOpenAI(judge_script) as judge:
        cfg = make_config(TASKS, base_url=agent.base_url, evaluation_metric="llm_judge",
                          evaluator_model_name="judge-m", evaluator_base_url=judge.base_url,
                          pricing={"fake-model": AGENT_PRICE, "judge-m": JUDGE_PRICE})
        summary = rollout(cfg, progress=False)
        judged = len(judge.requests)
    calls = _calls(server.db_url, cfg["run_id"])
    assert len(calls) == 6 and all(c[3] for c in calls)  # every call's cached tokens were stored
    model = sum(_price(AGENT_PRICE, p, c, k) for _, p, c, k in calls)
    judge_cost = judged * _price(JUDGE_PRICE, 200, 3, 64)
    assert judged == 3
    assert summary["model_cost_usd"] == pytest.approx(model, rel=1e-9)
    assert summary["judge_cost_usd"] == pytest.approx(judge_cost, rel=1e-9)
    assert summary["cost_usd"] == pytest.approx(model + judge_cost, rel=1e-9)
    assert summary["cost_unknown_models"] == []
    rows = [json.loads(line) for line in Path(summary["results_file"]).read_text().splitlines()]
    for row in rows:  # each task: its own calls and its judge call
        own = sum(_price(AGENT_PRICE, p, c, k) for t, p, c, k in calls if t == row["id"])
        assert row["cost_usd"] == pytest.approx(own + _price(JUDGE_PRICE, 200, 3, 64), rel=1e-9)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(summary["cost_usd"], rel=1e-9)
    assert main(["runs", "show", cfg["run_id"], "--database-url", server.db_url]) == 0
    assert f"cost        ${summary['cost_usd']:.6f}" in capsys.readouterr().out
    # a rescoring with the judge: its calls are priced on the scoring, the agent is not asked
    with FakeOpenAI(judge_script) as judge:
        assert main(["runs", "rescore", cfg["run_id"], "--metric", "llm_judge", "--judge-model", "judge-m",
                     "--judge-base-url", judge.base_url, "--json", "--database-url", server.db_url]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["scoring"]["judge_cost_usd"] == pytest.approx(3 * _price(JUDGE_PRICE, 200, 3, 64), rel=1e-9)
    assert rescored["cost_usd"] == pytest.approx(summary["cost_usd"], rel=1e-9)  # the run's own cost is unchanged


def test_an_unpriced_model_costs_unknown_never_zero(server, make_config, capsys):
    with FakeOpenAI(agent_script) as agent, FakeOpenAI(judge_script) as judge:
        cfg = make_config(TASKS[:1], base_url=agent.base_url)  # fake-model is in no table
        summary = rollout(cfg, progress=False)
        priced = make_config(TASKS[:1], base_url=agent.base_url, evaluation_metric="llm_judge",
                             evaluator_model_name="judge-unpriced", evaluator_base_url=judge.base_url,
                             pricing={"fake-model": AGENT_PRICE})
        half = rollout(priced, progress=False)
    assert summary["total_tokens"] > 0
    assert (summary["cost_usd"], summary["model_cost_usd"]) == (None, None)
    assert summary["cost_unknown_models"] == ["fake-model"]
    assert json.loads(Path(summary["results_file"]).read_text().splitlines()[0])["cost_usd"] is None
    assert main(["runs", "show", cfg["run_id"], "--database-url", server.db_url]) == 0
    assert "cost        unknown (no price for fake-model" in capsys.readouterr().out
    # the agent is priced, its judge is not: the total is unknown, the agent's part known
    assert half["model_cost_usd"] > 0 and half["judge_cost_usd"] is None and half["cost_usd"] is None
    assert half["cost_unknown_models"] == ["judge-unpriced"]


def test_pricing_table_lookup_and_overrides():
    shipped = load_pricing()
    assert shipped_pricing_file().is_file()
    assert shipped.price("gpt-4o-mini-2024-07-18") == shipped.price("gpt-4o-mini") != shipped.price("gpt-4o")
    assert shipped.price("openai/gpt-4.1") == shipped.price("gpt-4.1")
    assert shipped.price("claude-sonnet-4-20250514") is not None
    assert shipped.price("gpt-4o-custom") is None and shipped.cost("my-local-llama", 10, 10) is None
    mine = load_pricing({"gpt-4o": {"prompt": 1, "completion": 2}, "my-local-llama": {"prompt": 0, "completion": 0}})
    assert mine.price("gpt-4o") == ModelPrice(1.0, 2.0) and mine.cost("my-local-llama", 10, 10) == 0.0
    assert mine.cost("gpt-4o", 1_000_000, 0, 400_000) == pytest.approx(1.0)  # no cached price: priced as prompt
    with pytest.raises(ConfigError, match="'x' prompt must be a number >= 0"):
        load_config({"model_name": "m", "pricing": {"x": {"prompt": -1, "completion": 1}}})
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config({"model_name": "m", "pricing": {"x": {"prompt": 1, "completion": 1, "input": 2}}})
    with pytest.raises(ConfigError, match="'pricing' must be an object"):
        load_config({"model_name": "m", "pricing": ["gpt-4o"]})
