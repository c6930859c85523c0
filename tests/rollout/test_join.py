"""Joining a rollout run on sqlite (one machine): two processes started at the same
moment on one run id share its tasks through BEGIN IMMEDIATE claims; when one dies, a
third joins (the first still holds live claims) and takes the dead one's claims over at
once; worker ids stay unique and within the server's name rules; a run from before work
claims resumes from its attempts."""
from __future__ import annotations

import collections
import json
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from agentflow.rollout import rollout
from agentflow.runfiles import worker_name
from agentflow.runtime.sessions import MAX_WORKER_ID, NAME_PATTERN
from tests.rollout.joining import attempts, claims, gated, holders, start, tag_of, wait_until, write_config
from tests.rollout.test_resume_cli import TASKS, echo_once
from tests.support.fake_openai import FakeOpenAI, first_user, http_error


@pytest.mark.slow
def test_two_processes_started_at_once_share_one_sqlite_run(server, make_config, tmp_path):
    gate = threading.Event()
    with FakeOpenAI(gated(echo_once, gate), latency=0.05) as fake:
        cfg = make_config(TASKS, max_workers=2, base_url=fake.base_url, claim_lease=30)
        cfg_path = write_config(tmp_path / "cfg.json", cfg)
        procs = [start("rollout", cfg_path, tmp_path / f"home-{i}") for i in range(2)]  # one creates, one joins
        try:
            wait_until(lambda: {p.pid for p in procs} <= holders(server.db_url, "rollout", cfg["run_id"]), procs,
                       "both processes claimed tasks")
            # the second dies holding claims, and the run row names it (as after its last heartbeat)
            procs[1].kill()
            procs[1].communicate(timeout=30)
            engine = create_engine(server.db_url)
            with engine.begin() as conn:
                conn.execute(text("update rollout_runs set pid = :p where id = :r"),
                             {"p": procs[1].pid, "r": cfg["run_id"]})
            engine.dispose()
            # a third process joins without --resume: the first still holds live claims; the dead
            # one's claims (its pid is gone on this machine) are taken over at once, not after 30 s
            procs.append(start("rollout", cfg_path, tmp_path / "home-2"))
            wait_until(lambda: procs[2].pid in holders(server.db_url, "rollout", cfg["run_id"]),
                       [procs[0], procs[2]], "the third process joined")
            gate.set()
            t0 = time.monotonic()
            outs = {i: procs[i].communicate(timeout=60)[0] for i in (0, 2)}
            took = time.monotonic() - t0
        finally:
            gate.set()
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
    assert took < 20  # nobody waited for the dead process's 30 s leases
    for i, out in outs.items():
        assert procs[i].returncode == 0, out
        assert f"run {cfg['run_id']}: success" in out  # the last one ended the run; the other read its summary
    rows = attempts(server.db_url, cfg["run_id"])
    assert collections.Counter(r[0] for r in rows) == {t["id"]: 1 for t in TASKS}  # each task once
    assert {r[3] for r in rows} == {"completed"}
    assert len({tag_of(r[4]) for r in rows}) == 2  # the two survivors, each as its own sandbox workers
    ended = claims(server.db_url, "rollout", cfg["run_id"])
    assert {st for _, _, st, _, _ in ended} == {"done"}
    assert any(n == 2 for *_, n in ended)  # the killed process's claims were claimed again
    summary = json.loads((tmp_path / "out" / cfg["run_id"] / "summary.json").read_text())
    assert (summary["status"], summary["completed"], summary["total_samples"]) == ("success", len(TASKS), len(TASKS))


@pytest.mark.parametrize("run_id", ["rag-demo", "x" * 200, "with space/and slash", "ünïcode-run", "-leading"])
def test_worker_ids_follow_the_server_name_rules(run_id):
    names = {worker_name("ro", run_id, tag, f"w{slot}-r3") for tag in ("0a1b2c3d", "ffffffff") for slot in (0, 63)}
    assert len(names) == 4  # another process (tag) or slot: another worker
    for name in names:
        assert NAME_PATTERN.fullmatch(name) and len(name) <= MAX_WORKER_ID, name
    assert worker_name("ro", "rag-demo", "0a1b2c3d", "w0") == "ro-rag-demo-0a1b2c3d-w0"
    # two run ids that clean to the same text still get different names
    assert worker_name("ro", "a b", "t", "w0") != worker_name("ro", "a/b", "t", "w0")


def test_a_run_from_before_work_claims_resumes_from_its_attempts(make_config, server):
    def flaky(req):  # odd tasks fail (5xx) the first time round
        q = first_user(req)
        return http_error(500, "down") if int(q.split("v")[-1]) % 2 and not healed.is_set() else echo_once(req)

    healed = threading.Event()
    with FakeOpenAI(flaky) as fake:
        cfg = make_config(TASKS[:6], base_url=fake.base_url, max_retries=0)
        first = rollout(cfg, progress=False)
        assert first["status"] == "error" and first["infra_errors"] == 3
        engine = create_engine(server.db_url)
        with engine.begin() as conn:  # as a run written before the work_claims table existed
            conn.execute(text("delete from work_claims where run_id = :r"), {"r": cfg["run_id"]})
        engine.dispose()
        asked = dict(fake.chat_requests())
        healed.set()
        again = rollout({**cfg, "resume": True}, progress=False)
        asked_after = fake.chat_requests()
    assert again["status"] == "success" and again["completed"] == 6
    for t in TASKS[:6]:  # answered the first time: not asked again; failed: retried
        n = int(t["id"][1:])
        assert asked_after[t["question"]] - asked.get(t["question"], 0) == (2 if n % 2 else 0)
    rows = claims(server.db_url, "rollout", cfg["run_id"])
    assert len(rows) == 6 and {st for _, _, st, _, _ in rows} == {"done"}
    retried = {i for i, _, _, _, n in rows if n == 1}
    assert retried == {t["id"] for t in TASKS[:6] if int(t["id"][1:]) % 2}  # seeded done from the attempts
