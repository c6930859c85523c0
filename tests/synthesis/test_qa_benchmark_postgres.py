"""The QA → benchmark → pass@k loop on PostgreSQL (the runs' database by URL; the
sandbox server keeps its own)."""
from __future__ import annotations

from agentflow.cli import main
from agentflow.rollout import load_tasks, rollout
from agentflow.synthesis import synthesize
from tests.support.fake_openai import FakeOpenAI
from tests.support.postgres import postgres_url  # noqa: F401 - a fixture
from tests.synthesis.conftest import echo_explorer
from tests.synthesis.test_qa_benchmark import N, SEEDS, Agent, _qa_cli, _rollout_config


def test_synthesized_qa_gets_its_pass_at_k_back_on_postgres(server, make_config, tmp_path, capsys, postgres_url):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2,
                          database_url=postgres_url)
        assert synthesize(cfg, seeds=SEEDS)["qa"]["accepted"] == len(SEEDS)
    out = tmp_path / "bench.jsonl"
    assert main(["runs", "export", cfg["run_id"], "--as-benchmark", "-o", str(out),
                 "--database-url", postgres_url]) == 0
    tasks = load_tasks(out)
    wanted = dict(zip([t.question for t in tasks], [0, 2, 4, 1]))
    with FakeOpenAI(Agent({t.question: t.answer for t in tasks}, wanted)) as fake:
        summary = rollout({**_rollout_config(server, tmp_path, out, fake.base_url, "ro-pg"),
                           "database_url": postgres_url}, progress=False)
    assert summary["status"] == "success"
    rows = _qa_cli(postgres_url, cfg["run_id"], capsys)
    assert {r["question"]: r["difficulty"][0]["solved"] for r in rows} == wanted
    hard = _qa_cli(postgres_url, cfg["run_id"], capsys, "--solved", "1-3", "--of", str(N))
    assert sorted(r["question"] for r in hard) == sorted(q for q, n in wanted.items() if 1 <= n <= 3)
