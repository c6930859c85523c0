"""Synthesis through the model-call cache: a read_only rerun of a synthesis makes no
model call and writes the same QA; a miss is an error naming the call."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from agentflow.db import make_engine, make_session_factory
from agentflow.db.synthesis import SynthesisSeed

from agentflow.synthesis import synthesize
from tests.support.fake_openai import FakeOpenAI
from tests.synthesis.conftest import echo_explorer, read_jsonl

PRICE = {"fake-model": {"prompt": 3.0, "completion": 15.0}}


def _qa(rep) -> list[tuple]:
    return sorted((q["question"], q["answer"]) for q in read_jsonl(rep["qa_file"]))


def test_a_read_only_rerun_of_a_synthesis_makes_no_model_call(server, make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        # one expansion at a time: the tree (and so every request) is the same each run
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2,
                          max_expansions_per_seed=1, cache="read_write", pricing=PRICE)
        first = synthesize(cfg, seeds=["one seed", "two seed"])
        paid = len(fake.requests)
        again = synthesize({**cfg, "run_id": cfg["run_id"] + "-rerun", "cache": "read_only"},
                           seeds=["one seed", "two seed"])
        assert len(fake.requests) == paid  # not one model call
    assert first["qa"]["accepted"] == 2 and _qa(again) == _qa(first)
    c = again["model_cache"]
    assert (c["mode"], c["calls"], c["hits"], c["hit_rate"], c["stored"]) == ("read_only", paid, paid, 1.0, 0)
    assert first["model_cache"]["stored"] == paid and first["cost"]["cost_usd"] > 0
    assert again["cost"]["cost_usd"] == pytest.approx(0.0)  # a hit is not paid


def test_a_read_only_miss_in_synthesis_is_an_error_naming_the_call(server, make_config):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2, cache="read_only")
        rep = synthesize(cfg, seeds=["a seed nobody explored"])
        assert fake.requests == []
    assert rep["status"] == "error" and "1 seed(s) failed" in rep["error"]
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        (error,) = s.scalars(select(SynthesisSeed.error).where(SynthesisSeed.run_id == cfg["run_id"])).all()
    engine.dispose()
    assert error.startswith("model failed at depth 1: ModelCacheMiss: cache is read_only and holds no answer for "
                            f"this call: model 'fake-model' at {fake.base_url}, 3 messages, last user: 'Step 1 of at most 2.")
    assert "no model call was made" in error
