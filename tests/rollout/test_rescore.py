"""``agentflow runs rescore``: stored predictions scored again, versioned, without the agent model."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from agentflow.cli import main
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutScoring
from agentflow.rollout import rollout
from agentflow.rollout.rescore import JudgeRequired, UnknownMetric, UnknownRun, rescore_run
from tests.rollout.conftest import echo_script
from tests.support.fake_openai import FakeOpenAI

# echo_script answers with the question's last word: exact for "w0", a partial match for
# "w1 extra" (f1 2/3, exact 0), wrong for "nope"
TASKS = [{"id": "t0", "question": "say w0", "answer": "w0"},
         {"id": "t1", "question": "say w1", "answer": "w1 extra"},
         {"id": "t2", "question": "say w2", "answer": "nope"}]


def _attempts(db_url, run_id):
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        rows = {a.task_id: (a.score, a.metric) for a in
                s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id))}
    engine.dispose()
    return rows


def _scorings(db_url, run_id):
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        out = []
        for sc in s.scalars(select(RolloutScoring).where(RolloutScoring.run_id == run_id).order_by(RolloutScoring.id)):
            tasks = {s.get(RolloutAttempt, r.attempt_id).task_id: (r.score, r.scored, r.details) for r in sc.scores}
            out.append((sc.id, sc.metric, sc.judge_model, sc.created_at, tasks))
    engine.dispose()
    return out


@pytest.fixture
def scored_run(server, make_config):
    """A finished run scored with exact_match; the agent's scripted model stays up (and
    counts requests) while the test rescores."""
    with FakeOpenAI(echo_script) as agent:
        cfg = make_config(TASKS, base_url=agent.base_url, evaluation_metric="exact_match")
        summary = rollout(cfg, progress=False)
        assert summary["accuracy"] == pytest.approx(1 / 3, abs=1e-5)
        yield cfg, agent


def test_rescore_with_f1_keeps_old_scores_and_makes_no_agent_call(server, scored_run, capsys):
    cfg, agent = scored_run
    run_id, db = cfg["run_id"], ["--database-url", server.db_url]
    before = _attempts(server.db_url, run_id)
    asked = len(agent.requests)

    assert main(["runs", "rescore", run_id, "--metric", "f1", *db]) == 0
    out = capsys.readouterr().out
    assert "3 attempts scored with f1" in out and "metric f1" in out
    assert len(agent.requests) == asked  # the agent model was not called

    assert _attempts(server.db_url, run_id) == before  # the run's own scores are kept
    [(first_id, metric, judge, _, tasks)] = _scorings(server.db_url, run_id)
    assert (metric, judge) == ("f1", None)
    assert tasks["t0"][:2] == (1.0, True) and tasks["t1"][0] == pytest.approx(2 / 3) and tasks["t2"][0] == 0.0

    assert main(["runs", "rescore", run_id, "--metric", "em", *db]) == 0  # an alias; a second version
    capsys.readouterr()
    scorings = _scorings(server.db_url, run_id)
    assert [s[1] for s in scorings] == ["f1", "exact_match"]

    # runs show: the newest scoring by default, an older one with --scoring
    assert main(["runs", "show", run_id, "--json", *db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["scoring"]["id"] == scorings[1][0] and shown["metric"] == "exact_match"
    assert shown["accuracy"] == pytest.approx(1 / 3, abs=1e-5)
    assert main(["runs", "show", run_id, "--json", "--scoring", str(first_id), *db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["scoring"]["metric"] == "f1" and shown["accuracy"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-5)
    assert main(["runs", "show", run_id, "--scoring", str(first_id), *db]) == 0
    text = capsys.readouterr().out
    assert f"#{first_id} f1" in text and "score 0.67" in text
    assert len(agent.requests) == asked


def test_rescore_with_llm_judge_calls_only_the_judge(server, scored_run, capsys):
    cfg, agent = scored_run
    asked = len(agent.requests)

    def judge_script(req):
        prompt = req["messages"][0]["content"]
        graded = prompt.split("Answer to grade:")[1]
        if "w2" in graded:
            return "hmm, maybe"  # unparseable: unscored, not wrong
        return "CORRECT"

    with FakeOpenAI(judge_script) as judge:
        assert main(["runs", "rescore", cfg["run_id"], "--metric", "llm_judge", "--judge-model", "judge-1",
                     "--judge-base-url", judge.base_url, "--database-url", server.db_url]) == 0
        assert len(judge.requests) == 3 and {r["model"] for r in judge.requests} == {"judge-1"}
    assert len(agent.requests) == asked  # the judge was asked, the agent was not
    out = capsys.readouterr().out
    assert "judge judge-1" in out and "unscored 1" in out
    [(_, metric, judge_model, _, tasks)] = _scorings(server.db_url, cfg["run_id"])
    assert (metric, judge_model) == ("llm_judge", "judge-1")
    assert tasks["t0"][:2] == (1.0, True) and tasks["t1"][:2] == (1.0, True)
    assert tasks["t2"][:2] == (None, False) and "could not be parsed" in tasks["t2"][2]["unscored_reason"]


def test_rescore_bad_input(server, scored_run, capsys):
    cfg, _ = scored_run
    db = ["--database-url", server.db_url]
    assert main(["runs", "rescore", "missing-run", "--metric", "f1", *db]) == 2
    assert "no rollout run 'missing-run'" in capsys.readouterr().err
    assert main(["runs", "rescore", cfg["run_id"], "--metric", "bleu", *db]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'bleu'" in err and "f1" in err
    assert main(["runs", "show", cfg["run_id"], "--scoring", "999999", *db]) == 2
    assert "has no scoring 999999" in capsys.readouterr().err
    assert _scorings(server.db_url, cfg["run_id"]) == []  # nothing was written

    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        with pytest.raises(UnknownRun):
            rescore_run(s, "missing-run", "f1")
        with pytest.raises(UnknownMetric):
            rescore_run(s, cfg["run_id"], "bleu")
        with pytest.raises(JudgeRequired):
            rescore_run(s, cfg["run_id"], "llm_judge")
    engine.dispose()
