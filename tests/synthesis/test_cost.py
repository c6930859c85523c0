"""The model cost of a synthesis run, of each seed and per accepted QA pair."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from agentflow.db import make_engine, make_session_factory
from agentflow.db.synthesis import SynthesisNode, SynthesisQA, SynthesisSeed
from agentflow.synthesis import synthesize
from tests.support.fake_openai import FakeOpenAI
from tests.synthesis.conftest import echo_explorer

PRICE = {"prompt": 3.0, "completion": 15.0}


def _calls(db_url, run_id) -> list[tuple[int, int, int]]:
    """(seed_index, prompt, completion) of every model call the run stored."""
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        out = [(seed, p, c) for table in (SynthesisNode, SynthesisQA) for seed, p, c in s.execute(
            select(SynthesisSeed.seed_index, table.prompt_tokens, table.completion_tokens)
            .join(SynthesisSeed, SynthesisSeed.id == table.seed_id).where(table.run_id == run_id))]
    engine.dispose()
    return out


def test_synthesis_cost_is_the_sum_over_its_calls(server, make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2,
                          pricing={"fake-model": PRICE})
        rep = synthesize(cfg, seeds=["one seed", "two seed"])
    calls = _calls(server.db_url, cfg["run_id"])
    assert sum(1 for _, p, _ in calls if p) >= 4  # explorer and QA calls of both seeds (root nodes make none)
    price = lambda p, c: (p * PRICE["prompt"] + c * PRICE["completion"]) / 1e6  # noqa: E731
    total = sum(price(p, c) for _, p, c in calls)
    cost = rep["cost"]
    assert cost["cost_usd"] == pytest.approx(total, rel=1e-9) and cost["unknown_models"] == []
    for seed in (0, 1):
        assert cost["by_seed"][str(seed)] == pytest.approx(sum(price(p, c) for s, p, c in calls if s == seed))
    assert rep["qa"]["accepted"] == 2
    assert cost["cost_per_accepted_qa_usd"] == pytest.approx(total / 2, rel=1e-9)


def test_synthesis_with_an_unpriced_model_costs_unknown(server, make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2)
        rep = synthesize(cfg, seeds=["one seed"])
    assert rep["cost"]["cost_usd"] is None and rep["cost"]["cost_per_accepted_qa_usd"] is None
    assert rep["cost"]["by_seed"] == {"0": None} and rep["cost"]["unknown_models"] == ["fake-model"]
