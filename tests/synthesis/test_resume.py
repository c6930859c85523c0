"""A synthesis killed with SIGKILL resumes without redoing finished seeds or stored nodes."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from agentflow.db import make_engine, make_session_factory
from agentflow.db.synthesis import SynthesisNode, SynthesisSeed
from agentflow.synthesis import synthesize
from tests.support.fake_openai import FakeOpenAI, Reply, call, tool_calls
from tests.support.server import REPO
from tests.synthesis.conftest import echo_qa, is_qa, seed_text

SEEDS = [f"resume seed number {i}" for i in range(5)]


def _script(req):
    if is_qa(req):
        return echo_qa(req)
    path = "|".join(m["content"] or "" for m in req["messages"] if m["role"] in ("tool", "user"))
    value = hashlib.sha1(path.encode()).hexdigest()[:10]  # unique per path and branch: no duplicates
    return tool_calls(call("diag-echo", {"value": value}), content="next")


def _nodes(db_url, run_id):
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            seeds = {r.id: r for r in s.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run_id))}
            nodes = list(s.scalars(select(SynthesisNode).where(SynthesisNode.run_id == run_id)))
            return ({seeds[i].seed_index: seeds[i].status for i in seeds},
                    [(n.id, seeds[n.seed_id].seed_index, n.depth, n.kind) for n in nodes])
    finally:
        engine.dispose()


def test_killed_run_resumes_without_redoing_seeds_or_nodes(make_config, tmp_path):
    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text("".join(json.dumps({"content": s, "kwargs": {}}) + "\n" for s in SEEDS))
    with FakeOpenAI(_script, latency=0.12) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=3, branching_factor=2, depth_threshold=1,
                          seeds_file=str(seeds_file), max_workers=1)
        cfg_path = tmp_path / "synth.json"
        cfg_path.write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items() if k not in ("AGENTFLOW_DATABASE_URL",)}
        proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "synthesize", "--config", str(cfg_path),
                                 "--no-progress"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    status, nodes = _nodes(cfg["database_url"], cfg["run_id"])
                except Exception:  # noqa: BLE001 - the run's tables may not exist yet
                    status, nodes = {}, []
                done = [i for i, st in status.items() if st == "done"]
                started = {i for _, i, depth, _ in nodes if depth >= 1 and i not in done}
                if len(done) >= 2 and started:
                    break
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        status_before, nodes_before = _nodes(cfg["database_url"], cfg["run_id"])
        done_before = {i for i, st in status_before.items() if st == "done"}
        assert len(done_before) >= 2 and len(done_before) < len(SEEDS), status_before
        before = fake.chat_requests(key=seed_text)

        rep = synthesize(str(cfg_path), resume=True)
        after = {k: v - before.get(k, 0) for k, v in fake.chat_requests(key=seed_text).items()}

    assert rep["status"] == "success" and rep["seeds"]["done"] == len(SEEDS)
    assert rep["qa"]["accepted"] == 2 * len(SEEDS)
    for i in done_before:  # finished seeds cost no model call
        assert after.get(SEEDS[i], 0) == 0
    status_after, nodes_after = _nodes(cfg["database_url"], cfg["run_id"])
    assert set(nodes_before) <= set(nodes_after)  # stored nodes are kept, not remade
    shape = collections.Counter((i, depth) for _, i, depth, kind in nodes_after)
    for i in range(len(SEEDS)):
        assert [shape[(i, d)] for d in range(4)] == [1, 2, 2, 2], (i, shape)
    # a seed caught mid-tree only asked the model for its missing nodes (plus its QA)
    for i in {i for _, i, d, _ in nodes_before if d >= 1} - done_before:
        made = sum(1 for _, j, d, _ in nodes_before if j == i and d >= 1)
        assert after[SEEDS[i]] <= (6 - made) + 2
