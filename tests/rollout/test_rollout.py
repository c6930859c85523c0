"""Rollout end to end: fake model, real sandbox server, real database."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, text

from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt, RolloutRun, RolloutToolCall
from agentflow.rollout import FingerprintMismatch, RolloutError, quick_rollout, rollout
from tests.rollout.conftest import echo_script
from tests.support.fake_openai import FakeOpenAI, by_turn, call, fail_first, first_user, http_error, last_tool, tool_calls

TASKS = [{"id": f"t{i}", "question": f"say w{i}", "answer": f"w{i}"} for i in range(5)]


def _db(server):
    engine = make_engine(server.db_url)
    return engine, make_session_factory(engine)()


def test_full_run_scores_stores_and_links_to_server_audit(server, make_config):
    tasks = TASKS + [{"id": "wrong", "question": "say x", "answer": ["nope", "never"]}]
    with FakeOpenAI(echo_script) as fake:
        cfg = make_config(tasks, max_workers=3, base_url=fake.base_url)
        summary = rollout(cfg, progress=False)
    assert summary["status"] == "success"
    assert (summary["total_tasks"], summary["completed"], summary["failed"]) == (6, 6, 0)
    assert summary["accuracy"] == pytest.approx(5 / 6, abs=1e-5)
    assert summary["total_tool_calls"] == 12 and summary["total_turns"] == 12 and summary["total_tokens"] > 0
    rows = [json.loads(line) for line in Path(summary["results_file"]).read_text().splitlines()]
    assert [r["id"] for r in rows] == [t["id"] for t in tasks]  # dataset order
    assert rows[0]["prediction"] == "w0" and rows[0]["score"] == 1.0 and rows[-1]["score"] == 0.0
    assert json.loads(Path(summary["summary_file"]).read_text())["accuracy"] == summary["accuracy"]
    assert len(fake.requests) == 12
    assert fake.requests[0]["tools"] and {t["function"]["name"] for t in fake.requests[0]["tools"]} == \
        {"diag-echo", "bash-run"}

    engine, session = _db(server)
    with session:
        run = session.get(RolloutRun, cfg["run_id"])
        assert run.status == "success" and run.summary["accuracy"] == summary["accuracy"]
        assert run.spec["config"]["max_workers"] == 3 and run.spec["dataset"]["task_ids"][0] == "t0"
        attempt = session.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run.id,
                                                               RolloutAttempt.task_id == "t1")).one()
        assert [m.role for m in attempt.messages] == ["user", "assistant", "tool", "tool", "assistant"]
        assert [c.action for c in attempt.tool_calls] == ["diag:echo", "bash:run"]
        assert all(c.code == 0 and c.trace_id == attempt.trace_id for c in attempt.tool_calls)
        # every tool call of the trajectory is one audit row of the server, linked by trace_id and request_id
        audit = session.execute(text(
            "SELECT t.action, t.request_id FROM tool_calls t WHERE t.trace_id = :tr ORDER BY t.id"),
            {"tr": attempt.trace_id}).all()
        assert sorted(a for a, _ in audit) == ["bash:run", "diag:echo"]
        assert {r for _, r in audit} == {c.request_id for c in attempt.tool_calls}
    engine.dispose()


def test_tool_errors_go_back_to_the_model_and_kwargs_are_injected(make_config):
    script = by_turn(
        tool_calls(call("diag-echo", "{broken json"), call("no-such-tool", {}), call("diag-echo", {"value": "mine"}),
                   call("diag-echo", {"value": "x", "fail": True})),
        lambda req: "<answer>" + " | ".join(m["content"][:60] for m in req["messages"] if m["role"] == "tool")
        + "</answer>")
    tasks = [{"id": "k", "question": "go", "answer": "?", "kwargs": {"value": "injected", "db_id": "ignored"}}]
    with FakeOpenAI(script) as fake:
        summary = rollout(make_config(tasks, save_trajectories=True, base_url=fake.base_url), progress=False)
    assert summary["completed"] == 1
    tool_msgs = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 4  # every call answered, in order, with its own id
    assert [m["tool_call_id"] for m in tool_msgs] == [c["id"] for c in fake.requests[1]["messages"][-5]["tool_calls"]]
    assert "not valid JSON" in tool_msgs[0]["content"]
    assert "unknown tool 'no-such-tool'" in tool_msgs[1]["content"] and "diag-echo" in tool_msgs[1]["content"]
    assert json.loads(tool_msgs[2]["content"]) == {"value": "injected"}  # task kwargs win, only where accepted
    assert tool_msgs[3]["content"].startswith("Error 2001")
    # the injected parameter is not offered to the model
    echo = next(t for t in fake.requests[0]["tools"] if t["function"]["name"] == "diag-echo")
    assert "value" not in echo["function"]["parameters"]["properties"]
    traj = json.loads(Path(summary["trajectories_file"]).read_text().splitlines()[0])
    assert [c["code"] for c in traj["tool_calls"]] == [None, None, 0, 2001]


def test_long_tool_output_is_capped_in_prompt_but_stored_whole(server, make_config):
    big = "x" * 5000
    script = by_turn(tool_calls(call("diag-echo", {"value": big})), lambda req: f"<answer>{len(last_tool(req))}</answer>")
    with FakeOpenAI(script) as fake:
        cfg = make_config([{"id": "big", "question": "q", "answer": "1"}], max_tool_output_chars=1000,
                          base_url=fake.base_url)
        rollout(cfg, progress=False)
    shown = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"][0]["content"]
    assert len(shown) < 1100 and "[output truncated: showing 1000 of 5013 characters]" in shown
    engine, session = _db(server)
    with session:
        c = session.scalars(select(RolloutToolCall).join(RolloutAttempt)
                            .where(RolloutAttempt.run_id == cfg["run_id"])).one()
        assert c.prompt_truncated and json.loads(c.result) == {"value": big} and c.result_chars == 5013
    engine.dispose()


def test_max_turns_timeout_and_model_retries(make_config):
    loop = tool_calls(call("diag-echo", {"value": 1}))
    with FakeOpenAI(loop) as fake:
        s = rollout(make_config(TASKS[:1], max_turns=3, base_url=fake.base_url), progress=False)
    assert s["outcomes"] == {"max_turns": 1} and s["accuracy"] == 0.0 and len(fake.requests) == 3
    with FakeOpenAI(loop, latency=0.15) as fake:
        s = rollout(make_config(TASKS[:1], task_timeout=0.4, max_turns=50, base_url=fake.base_url), progress=False)
    assert s["outcomes"] == {"timeout": 1} and len(fake.requests) <= 6
    # 429 and 500 are retried by the client; the tasks succeed
    script = fail_first(1, 429, fail_first(1, 500, echo_script))
    with FakeOpenAI(script) as fake:
        s = rollout(make_config(TASKS[:3], max_workers=3, base_url=fake.base_url), progress=False)
    assert s["accuracy"] == 1.0 and len(fake.requests) == 3 * 2 + 3 * 2


def test_infra_failures_are_retried_on_resume(server, make_config):
    with FakeOpenAI(http_error(500, "model down")) as fake:
        cfg = make_config(TASKS[:3], max_retries=1, base_url=fake.base_url)
        s = rollout(cfg, progress=False)
    assert s["status"] == "error" and s["infra_errors"] == 3 and s["accuracy"] == 0.0
    with FakeOpenAI(echo_script) as fake:
        s = rollout({**cfg, "base_url": fake.base_url, "resume": True}, progress=False)
    assert s["status"] == "success" and s["accuracy"] == 1.0 and len(fake.requests) == 6
    engine, session = _db(server)
    with session:  # the failed attempts are kept beside the retries
        attempts = session.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == cfg["run_id"])).all()
        assert sorted((a.task_id, a.attempt, a.status) for a in attempts) == [
            ("t0", 1, "infra_error"), ("t0", 2, "completed"), ("t1", 1, "infra_error"), ("t1", 2, "completed"),
            ("t2", 1, "infra_error"), ("t2", 2, "completed")]
    engine.dispose()


def test_resume_refuses_a_changed_config_and_skips_answered_tasks(make_config):
    with FakeOpenAI(echo_script) as fake:
        cfg = make_config(TASKS[:3], system_prompt="be brief", base_url=fake.base_url)
        rollout(cfg, progress=False)
        with pytest.raises(RolloutError, match="already exists; pass resume=True"):
            rollout(cfg, progress=False)
        with pytest.raises(FingerprintMismatch, match=r"system_prompt: 'be brief' -> 'be verbose'"):
            rollout({**cfg, "system_prompt": "be verbose", "resume": True}, progress=False)
        before = len(fake.requests)
        # transport and pacing may change; answered tasks are not run again
        s = rollout({**cfg, "resume": True, "max_workers": 4, "request_timeout": 30}, progress=False)
        assert len(fake.requests) == before and s["completed"] == 3
        with pytest.raises(RolloutError, match="no rollout run 'nope' to resume"):
            rollout({**cfg, "run_id": "nope", "resume": True}, progress=False)


def test_llm_judge_garbage_verdict_is_unscored(make_config):
    answer_only = lambda req: f"<answer>{first_user(req).split()[-1]}</answer>"  # noqa: E731
    with FakeOpenAI(answer_only) as model, FakeOpenAI("I'd rather not say :)") as judge, \
            FakeOpenAI("Verdict: CORRECT") as good_judge:
        cfg = make_config(TASKS[:2], available_tools=[], evaluation_metric="llm_judge",
                          evaluator_base_url=judge.base_url, evaluator_model_name="judge-m", base_url=model.base_url)
        s = rollout(cfg, progress=False)
        assert (s["completed"], s["unscored"], s["accuracy"], s["average_score"]) == (2, 2, None, None)
        s = rollout({**cfg, "run_id": cfg["run_id"] + "b", "evaluator_base_url": good_judge.base_url},
                    progress=False)
        assert (s["unscored"], s["accuracy"]) == (0, 1.0)
    assert "say w0" in judge.requests[0]["messages"][0]["content"]  # the judge sees the question
    assert judge.requests[0]["model"] == "judge-m"


def test_n_samples_adds_pass_at_k(make_config):
    answers = iter(["w0", "bad", "bad", "w1", "w1", "w1"])
    with FakeOpenAI(lambda req: f"<answer>{next(answers)}</answer>") as fake:
        s = rollout(make_config(TASKS[:2], n_samples=3, available_tools=[], base_url=fake.base_url), progress=False)
    assert s["total_samples"] == 6 and s["completed"] == 6
    assert s["accuracy"] == pytest.approx(4 / 6, abs=1e-5)
    assert s["pass_at_k"]["pass@3"] == 1.0
    assert s["pass_at_k"]["pass@1"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-5)


def test_quick_rollout(server):
    with FakeOpenAI(by_turn(tool_calls(call("bash-run", {"command": "echo $((6*7))"})),
                            lambda req: f"Final Answer: {json.loads(last_tool(req))['stdout'].strip()}")) as fake:
        out = quick_rollout("what is 6*7?", tools=["bash:*"], model_name="m", base_url=fake.base_url,
                            sandbox_url=server.url, max_turns=3)
        assert (out["answer"], out["status"], out["turns"]) == ("42", "completed", 2)
    with FakeOpenAI("hello") as fake:
        plain = quick_rollout("hi", model_name="m", base_url=fake.base_url)
    assert (plain["answer"], plain["status"]) == ("hello", "completed") and "tools" not in fake.requests[-1]


def test_unknown_tool_pattern_is_a_clear_error(make_config):
    with FakeOpenAI(echo_script) as fake:
        with pytest.raises(RolloutError, match=r"\['nosuch:\*'\] match\(es\) no tool"):
            rollout(make_config(TASKS[:1], available_tools=["nosuch:*"], base_url=fake.base_url), progress=False)
