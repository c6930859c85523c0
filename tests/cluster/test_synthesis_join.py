"""Two ``agentflow synthesize`` processes on one run id and one PostgreSQL database, one
``kill -9``'d while it explores a seed: the other takes that seed over once its lease
expires (going on from its stored nodes), every seed is processed to its end exactly
once, and the survivor ends the run with the right report."""
from __future__ import annotations

import collections
import hashlib
import json
import threading
import uuid

import pytest

from tests.rollout.joining import claims, gated, holders, owner_pid, query, start, wait_until, write_config
from tests.support.fake_openai import call, tool_calls, FakeOpenAI

SEEDS = [f"join seed number {i}" for i in range(6)]


def _script(req):
    if any(t["function"]["name"] == "submit_qa" for t in req.get("tools") or []):
        text = req["messages"][-1]["content"]
        tag = hashlib.sha1(text.encode()).hexdigest()[:12]
        return tool_calls(call("submit_qa", {"question": f"Which value closes the chain {tag}?",
                                             "answer": "done", "reasoning_steps": ["first", "second"]}))
    path = "|".join(m["content"] or "" for m in req["messages"] if m["role"] in ("tool", "user"))
    value = hashlib.sha1(path.encode()).hexdigest()[:10]  # unique per path and branch: no duplicates
    return tool_calls(call("diag-echo", {"value": value}), content="next")


@pytest.mark.slow
def test_two_synthesis_processes_one_killed_each_seed_once(postgres_url, server, tmp_path):
    run_id = f"sjoin-{uuid.uuid4().hex[:8]}"
    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text("".join(json.dumps({"content": s, "kwargs": {}}) + "\n" for s in SEEDS))
    gate = threading.Event()
    with FakeOpenAI(gated(_script, gate), latency=0.1) as fake:
        cfg = {"model_name": "fake-model", "base_url": fake.base_url, "api_key": "x", "sandbox_server_url": server.url,
               "database_url": postgres_url, "output_dir": str(tmp_path / "out"), "run_id": run_id,
               "seeds_file": str(seeds_file), "max_retries": 1, "max_depth": 3, "branching_factor": 2,
               "depth_threshold": 1, "min_depth": 2, "max_selected_traj": 1, "available_tools": ["diag:echo"],
               "temperature": 0.0, "max_workers": 1, "claim_lease": 2, "min_answer_support": 0.0}
        cfg_path = write_config(tmp_path / "synth.json", cfg)
        first = start("synthesize", cfg_path, tmp_path / "home-a")
        second = None
        try:
            wait_until(lambda: first.pid in holders(postgres_url, "synthesis", run_id), [first],
                       "the first process claimed a seed")
            second = start("synthesize", cfg_path, tmp_path / "home-b")  # joins the running run
            wait_until(lambda: second.pid in holders(postgres_url, "synthesis", run_id), [first, second],
                       "the second process joined and claimed a seed")
            gate.set()

            def first_is_mid_seed() -> bool:
                rows = query(postgres_url, "select w.item from work_claims w join synthesis_seeds s on "
                                           "s.run_id = w.run_id and cast(s.seed_index as text) = w.item join "
                                           "synthesis_nodes n on n.seed_id = s.id where w.run_id = :r and "
                                           "w.status = 'claimed' and w.owner like :o and n.kind = 'action'",
                             r=run_id, o=f"%:{first.pid}:%")
                done = query(postgres_url, "select count(*) from work_claims where run_id = :r and status = 'done'",
                             r=run_id)
                return bool(rows) and done and done[0][0] >= 1

            wait_until(first_is_mid_seed, [first, second], "the first process was exploring a seed")
            held = {i for i, _, st, o, _ in claims(postgres_url, "synthesis", run_id)
                    if st == "claimed" and owner_pid(o) == first.pid}
            first.kill()  # kill -9 in the middle of a seed's tree
            first.communicate(timeout=30)
            out = second.communicate(timeout=90)[0]
        finally:
            gate.set()
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert first.returncode == -9
    assert second.returncode == 0, out
    assert f"run {run_id}: success" in out

    seeds = query(postgres_url, "select seed_index, status, attempts from synthesis_seeds where run_id = :r "
                                "order by seed_index", r=run_id)
    assert [(i, st) for i, st, _ in seeds] == [(i, "done") for i in range(len(SEEDS))]
    # the seed the killed process was exploring was started again; it may also have held a
    # seed claimed ahead of a free slot, never started
    twice = {i for i, _, n in seeds if n > 1}
    assert twice and twice <= {int(i) for i in held}
    ended = claims(postgres_url, "synthesis", run_id)
    assert {st for _, _, st, _, _ in ended} == {"done"}
    assert {owner_pid(o) for _, _, _, o, _ in ended} == {first.pid, second.pid}  # both ended seeds
    assert all(owner_pid(o) == second.pid and n == 2 for i, _, _, o, n in ended if i in held)  # taken over
    trees = query(postgres_url, "select s.seed_index, count(n.id) from synthesis_seeds s join synthesis_nodes n on "
                                "n.seed_id = s.id where s.run_id = :r group by s.seed_index", r=run_id)
    assert len({n for _, n in trees}) == 1  # the taken-over tree went on from its stored nodes: same size as the rest
    per_path = collections.Counter(p for (p,) in query(postgres_url, "select path_id from synthesis_qa where "
                                                                     "run_id = :r", r=run_id))
    selected = query(postgres_url, "select seed_id, count(*) from synthesis_paths where run_id = :r and selected "
                                   "group by seed_id", r=run_id)
    assert len(selected) == len(SEEDS) and {n for _, n in selected} == {1}  # one selection per seed, not two
    assert set(per_path.values()) == {1}  # no path got a second QA from the takeover

    report = json.loads((tmp_path / "out" / run_id / "report.json").read_text())
    assert report["status"] == "success" and report["seeds"]["done"] == report["seeds"]["total"] == len(SEEDS)
    qa_lines = (tmp_path / "out" / run_id / "synthesized_qa.jsonl").read_text().splitlines()
    assert len(qa_lines) == report["qa"]["accepted"] == sum(per_path.values()) - report["qa"]["rejected"]
