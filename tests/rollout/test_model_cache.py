"""The model-call cache and replay: a read_only rerun makes no model call and reproduces
the run; a resume never pays twice; samples keep their own answers; replay serves a
recorded run's tool results. Real server, real ``openai`` client on the scripted model,
real sqlite and migrations; the fake's request log counts the model calls."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from agentflow.cli import main
from agentflow.config import ConfigError
from agentflow.db import make_engine, make_session_factory
from agentflow.db.model_cache import ModelCacheEntry
from agentflow.db.rollout import RolloutAttempt, RolloutRun
from agentflow.rollout import RolloutError, load_config, rollout
from tests.rollout.conftest import echo_script
from tests.support.fake_openai import FakeOpenAI, call, first_user, last_tool, tool_calls, turn
from tests.support.server import REPO

TASKS = [{"id": f"m{i}", "question": f"say w{i}", "answer": f"w{i}"} for i in range(3)]
PRICE = {"fake-model": {"prompt": 2.0, "completion": 8.0}}

# what differs between two runs of the same tasks whatever the cache does: ids, timing,
# and what was paid (a hit is free)
_RESULT_VOLATILE = {"trace_id", "duration_ms", "usage", "cost_usd"}
_CALL_VOLATILE = {"duration_ms", "request_id", "result_meta", "replayed"}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _results(summary) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in _RESULT_VOLATILE} for r in _lines(summary["results_file"])]


def _trajectories(summary) -> list[dict]:
    out = []
    for t in _lines(summary["trajectories_file"]):
        out.append({"id": t["id"], "sample": t["sample"], "status": t["status"], "messages": t["messages"],
                    "tool_calls": [{k: v for k, v in c.items() if k not in _CALL_VOLATILE} for c in t["tool_calls"]]})
    return out


def _attempts(db_url, run_id) -> list[RolloutAttempt]:
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        rows = s.scalars(select(RolloutAttempt).where(RolloutAttempt.run_id == run_id)
                         .options(selectinload(RolloutAttempt.messages), selectinload(RolloutAttempt.tool_calls))
                         .order_by(RolloutAttempt.id)).all()
    engine.dispose()
    return list(rows)


def test_read_only_rerun_makes_no_model_call_and_reproduces_the_run(server, make_config):
    with FakeOpenAI(echo_script) as fake:
        cfg = make_config(TASKS, base_url=fake.base_url, max_workers=2, cache="read_write", pricing=PRICE)
        first = rollout(cfg, progress=False)
        paid = len(fake.requests)
        assert paid == 6 and first["status"] == "success" and first["accuracy"] == 1.0
        # bash reports duration_ms: it is kept in the database, not shown to the model
        for a in _attempts(server.db_url, cfg["run_id"]):
            bash = [c for c in a.tool_calls if c.action == "bash:run"]
            assert bash and all("duration_ms" in (c.result_meta or {}) for c in bash)
            assert all("duration_ms" not in (m.content or "") for m in a.messages if m.role == "tool")
        again = rollout({**cfg, "run_id": cfg["run_id"] + "-rerun", "cache": "read_only"}, progress=False)
        assert len(fake.requests) == paid  # not one model call
    assert _results(again) == _results(first)
    assert _trajectories(again) == _trajectories(first)
    assert first["model_cache"]["calls"] == 6 and first["model_cache"]["hits"] == 0
    assert first["model_cache"]["entries_written"] == 6 and first["cost_usd"] > 0
    c = again["model_cache"]
    assert (c["mode"], c["calls"], c["hits"], c["misses"], c["hit_rate"], c["entries_written"]) == \
        ("read_only", 6, 6, 0, 1.0, 0)
    assert c["entries"] >= 6 and c["size_bytes"] > 0
    assert again["cost_usd"] == 0 and again["total_tokens"] == 0  # a hit is not paid
    # the messages keep the usage the provider reported, flagged as hits
    hits = [m for a in _attempts(server.db_url, again["run_id"]) for m in a.messages if m.role == "assistant"]
    assert len(hits) == 6 and all(m.cache_hit and m.prompt_tokens for m in hits)


def test_a_read_only_miss_is_an_error_naming_the_call_not_a_model_call(server, make_config, capsys):
    with FakeOpenAI(echo_script) as fake:
        cfg = make_config(TASKS[:2], base_url=fake.base_url, cache="read_only")
        summary = rollout(cfg, progress=False)
        assert fake.requests == []
    assert summary["status"] == "error" and summary["outcomes"] == {"infra_error": 2}
    for a in _attempts(server.db_url, cfg["run_id"]):
        assert a.error.startswith("ModelCacheMiss: cache is read_only and holds no answer for this call: "
                                  "model 'fake-model' at " + fake.base_url + ", sample 0, 1 messages, last user: ")
        assert "no model call was made" in a.error and a.model_calls == 0
    assert summary["breakdown"][0]["reason"] == "ModelCacheMiss"
    # the same from the command line, with the flag
    with FakeOpenAI(echo_script) as fake:
        cfg_path = Path(cfg["output_dir"]).parent / "cli-cfg.json"
        cfg_path.write_text(json.dumps({**cfg, "base_url": fake.base_url, "cache": "read_write"}))
        capsys.readouterr()
        assert main(["rollout", "--config", str(cfg_path), "--run-id", cfg["run_id"] + "-cli", "--cache", "read_only",
                     "--no-progress"]) == 1
        assert fake.requests == []
    out = capsys.readouterr().out
    assert "model cache read_only: 0 calls, 0 hits" in out and "infra_error × ModelCacheMiss: 2" in out


def test_samples_are_not_served_each_others_answers(server, make_config):
    counter = itertools.count()
    lock = threading.Lock()

    def sampled(req):  # a different answer on every request, as sampling at temperature > 0 gives
        with lock:
            return f"Final Answer: {first_user(req).split()[-1]}-{next(counter)}"

    with FakeOpenAI(sampled) as fake:
        cfg = make_config(TASKS[:2], base_url=fake.base_url, n_samples=3, temperature=0.7, cache="read_write",
                          evaluation_metric="contains_answer")
        first = rollout(cfg, progress=False)
        assert len(fake.requests) == 6  # every sample asked the model itself
        again = rollout({**cfg, "run_id": cfg["run_id"] + "-rerun", "cache": "read_only"}, progress=False)
        assert len(fake.requests) == 6
    predictions = {(r["id"], r["sample"]): r["prediction"] for r in _lines(first["results_file"])}
    assert len(set(predictions.values())) == 6  # no sample got another's answer
    assert {(r["id"], r["sample"]): r["prediction"] for r in _lines(again["results_file"])} == predictions
    assert again["model_cache"]["hits"] == 6
    # the model has no price: the paid run's cost is unknown, the cached one's is $0
    assert first["cost_usd"] is None and again["cost_usd"] == 0


def _wait(condition, what: str, proc: subprocess.Popen, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, proc.stdout.read()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_resume_after_a_crash_does_not_pay_again_for_answered_calls(server, make_config, tmp_path):
    release = threading.Event()

    def script(req):
        if turn(req) == 0:
            return tool_calls(call("diag-echo", {"value": first_user(req).split()[-1]}))
        release.wait(120)  # the first process dies while it waits for these answers
        return f"Final Answer: {json.loads(last_tool(req))['value']}"

    with FakeOpenAI(script) as fake:
        cfg = make_config(TASKS[:2], base_url=fake.base_url, max_workers=2, cache="read_write")
        cfg_path = tmp_path / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        env = {**os.environ, "AGENTFLOW_HOME": str(tmp_path / "home")}
        proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "rollout", "--config", str(cfg_path),
                                 "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            _wait(lambda: sum(1 for r in list(fake.requests) if turn(r) == 1) == 2, "both second turns", proc)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert _attempts(server.db_url, cfg["run_id"]) == []  # killed mid-task: nothing stored
        before = fake.chat_requests()
        summary = rollout(cfg_path, run_id=cfg["run_id"], resume=True, progress=False)
        after = fake.chat_requests()
    assert summary["status"] == "success" and summary["accuracy"] == 1.0
    # each task's first call was answered before the crash: the resume got it from the
    # cache; only the call the crash cut off was made again
    firsts = {k: sum(1 for r in fake.requests if first_user(r) == k and turn(r) == 0) for k in after}
    assert firsts == {"say w0": 1, "say w1": 1}
    assert {k: after[k] - before[k] for k in after} == {"say w0": 1, "say w1": 1}
    assert summary["model_cache"]["agent_calls"] == 4 and summary["model_cache"]["agent_hits"] == 2


RANDOM = "od -An -N8 -tx8 /dev/urandom"


def random_script(req):
    """One bash call whose output is random, then that output as the answer."""
    if turn(req) == 0:
        return tool_calls(call("bash-run", {"command": RANDOM}))
    return f"Final Answer: {json.loads(last_tool(req))['stdout'].strip()}"


def test_replay_serves_the_recorded_tool_results_so_the_rerun_is_exact(server, make_config):
    with FakeOpenAI(random_script) as fake:
        cfg = make_config(TASKS[:2], base_url=fake.base_url, available_tools=["bash:run"], cache="read_write")
        first = rollout(cfg, progress=False)
        paid = len(fake.requests)
        assert paid == 4 and first["status"] == "success"
        # without replay the tool answers differently, so the second turn's request is new:
        # read_only refuses it (and names it) instead of calling the model
        plain = rollout({**cfg, "run_id": cfg["run_id"] + "-plain", "cache": "read_only"}, progress=False)
        assert len(fake.requests) == paid
        assert plain["outcomes"] == {"infra_error": 2}
        assert all("ModelCacheMiss" in a.error and "3 messages, last tool: " in a.error
                   for a in _attempts(server.db_url, plain["run_id"]))
        replayed = rollout({**cfg, "run_id": cfg["run_id"] + "-replay", "cache": "read_only",
                            "replay": cfg["run_id"]}, progress=False)
        assert len(fake.requests) == paid  # no model call
    assert replayed["status"] == "success" and replayed["model_cache"]["hit_rate"] == 1.0
    assert _trajectories(replayed) == _trajectories(first)
    assert _results(replayed) == _results(first)
    original = {a.task_id: a for a in _attempts(server.db_url, cfg["run_id"])}
    for a in _attempts(server.db_url, replayed["run_id"]):
        (c,), (o,) = a.tool_calls, original[a.task_id].tool_calls
        assert c.replayed and c.result == o.result and c.request_id == o.request_id  # the recorded audit row
        assert c.result_meta == o.result_meta and "duration_ms" in c.result_meta


def test_a_call_the_recording_does_not_have_is_a_replay_mismatch(server, make_config):
    with FakeOpenAI(random_script) as fake:
        cfg = make_config(TASKS[:1], base_url=fake.base_url, available_tools=["bash:run"], cache="off")
        rollout(cfg, progress=False)

    def other(req):
        return tool_calls(call("bash-run", {"command": "echo other"})) if turn(req) == 0 else "Final Answer: x"

    with FakeOpenAI(other) as fake:
        summary = rollout({**cfg, "run_id": cfg["run_id"] + "-b", "base_url": fake.base_url, "replay": cfg["run_id"]},
                          progress=False)
    (a,) = _attempts(server.db_url, summary["run_id"])
    assert a.status == "infra_error"
    assert a.error == (f"replay mismatch: run {cfg['run_id']!r}, task 'm0' sample 0, tool call #1 is bash:run "
                       f'{{"command": "echo other"}}, but the recorded call was bash:run {{"command": "{RANDOM}"}}')
    assert summary["breakdown"][0]["reason"] == "replay_mismatch"


def test_bad_cache_value_and_unknown_replay_run_are_errors_at_the_start(server, make_config, capsys):
    with pytest.raises(ConfigError, match=r"'cache' must be one of read_write, read_only, off, got 'sometimes'"):
        load_config({"model_name": "m", "cache": "sometimes"})
    assert load_config({"model_name": "m", "cache": "read-only"}).cache == "read_only"
    with pytest.raises(SystemExit):
        main(["rollout", "--config", "x.json", "--cache", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    with FakeOpenAI(echo_script) as fake:
        cfg = make_config(TASKS[:1], base_url=fake.base_url, replay="no-such-run")
        with pytest.raises(RolloutError, match=r"replay: no rollout run 'no-such-run' in this database"):
            rollout(cfg, progress=False)
        assert fake.requests == []
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        assert s.get(RolloutRun, cfg["run_id"]) is None  # refused before the run was made
    engine.dispose()


def test_the_judge_goes_through_the_cache(server, make_config):
    with FakeOpenAI(echo_script) as agent, FakeOpenAI("CORRECT") as judge:
        cfg = make_config(TASKS[:2], base_url=agent.base_url, evaluation_metric="llm_judge",
                          evaluator_model_name="judge-m", evaluator_base_url=judge.base_url, cache="read_write",
                          pricing={**PRICE, "judge-m": {"prompt": 1.0, "completion": 1.0}})
        first = rollout(cfg, progress=False)
        assert len(judge.requests) == 2 and first["judge_cost_usd"] > 0
        again = rollout({**cfg, "run_id": cfg["run_id"] + "-rerun", "cache": "read_only"}, progress=False)
        assert len(judge.requests) == 2 and len(agent.requests) == 4
        # a rescoring's judge uses the cache too: the same verdicts, no call, $0
        assert main(["runs", "rescore", again["run_id"], "--metric", "llm_judge", "--judge-model", "judge-m",
                     "--judge-base-url", judge.base_url, "--cache", "read_only",
                     "--database-url", server.db_url]) == 0
        assert len(judge.requests) == 2
    def verdicts(summary):
        return [(r["id"], r["prediction"], r["score"], r["score_details"]["judge_reply"])
                for r in _lines(summary["results_file"])]

    assert verdicts(again) == verdicts(first) and [v[2] for v in verdicts(again)] == [1.0, 1.0]
    assert all(r["score_details"]["judge_cache_hit"] for r in _lines(again["results_file"]))
    c = again["model_cache"]
    assert (c["judge_calls"], c["judge_hits"], c["hits"], c["calls"]) == (2, 2, 6, 6)
    assert again["judge_cost_usd"] == 0 and again["cost_usd"] == 0
    with make_session_factory(make_engine(server.db_url))() as s:
        kinds = {e.kind for e in s.scalars(select(ModelCacheEntry).where(ModelCacheEntry.run_id == cfg["run_id"]))}
    assert kinds == {"agent", "judge"}
