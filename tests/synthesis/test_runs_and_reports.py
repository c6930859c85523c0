"""Synthesis runs in ``agentflow runs`` and reports that say why a run made no QA (issue 16)."""
from __future__ import annotations

import json
from pathlib import Path

from agentflow.cli import main
from agentflow.synthesis import synthesize
from agentflow.synthesis.runner import FATAL_REPEAT
from tests.support.fake_openai import FakeOpenAI, http_error
from tests.synthesis.conftest import echo_explorer, read_jsonl


def test_runs_list_show_and_export_cover_synthesis_runs(server, make_config, tmp_path, capsys):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2)
        rep = synthesize(cfg, seeds=["one seed"])
    assert rep["status"] == "success" and rep["qa"]["accepted"] == 1
    # its own folder under output_dir, and output_dir/latest
    assert Path(rep["qa_file"]).parent == Path(cfg["output_dir"]) / cfg["run_id"]
    assert (Path(cfg["output_dir"]) / "latest").resolve() == (Path(cfg["output_dir"]) / cfg["run_id"]).resolve()
    db = ["--database-url", server.db_url]
    assert main(["runs", "list", "--limit", "200", *db]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["KIND", "RUN", "STATUS"]
    line = next(x for x in out.splitlines() if cfg["run_id"] in x)
    assert line.split()[:3] == ["synthesis", cfg["run_id"], "success"] and "done 1/1" in line and "qa 1" in line
    assert main(["runs", "show", cfg["run_id"], *db]) == 0
    out = capsys.readouterr().out
    assert f"run {cfg['run_id']}: success" in out and "1 accepted" in out and "seed 0" in out
    assert main(["runs", "show", cfg["run_id"], "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out)["qa"]["accepted"] == 1
    again = tmp_path / "again"
    assert main(["runs", "export", cfg["run_id"], "--output-dir", str(again), *db]) == 0
    assert f"wrote {again / 'synthesized_qa.jsonl'}" in capsys.readouterr().out
    assert read_jsonl(again / "synthesized_qa.jsonl") == read_jsonl(rep["qa_file"])


def test_empty_synthesis_explains_why(server, make_config, capsys):
    # every branch stops after one step: no path reaches min_depth 2
    script = echo_explorer(lambda d, b, r: f"v{d}-{b}" if d == 1 else None)
    with FakeOpenAI(script) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=3, branching_factor=1, min_depth=2)
        rep = synthesize(cfg, seeds=["a seed"])
    assert rep["status"] == "success" and rep["paths"]["candidates"] == 0 and rep["qa"]["accepted"] == 0
    assert rep["paths"]["deepest"] == 1 and rep["paths"]["min_depth"] == 2
    assert any("deepest path reached depth 1, below min_depth 2" in why for why in rep["explanation"])
    from agentflow.cli.synthesize import format_report
    text = format_report(rep)
    assert "(deepest 1, min_depth 2)" in text and "why no QA" in text
    assert json.loads(Path(rep["report_file"]).read_text())["explanation"] == rep["explanation"]


def test_rejected_qa_is_explained_by_reason(make_config):
    from tests.synthesis.conftest import echo_qa

    script = echo_explorer(qa=lambda req: echo_qa(req, answer="a value nowhere in the observations"))
    with FakeOpenAI(script) as fake:
        rep = synthesize(make_config(base_url=fake.base_url, max_depth=2, branching_factor=1), seeds=["s"])
    assert rep["qa"]["accepted"] == 0
    assert rep["explanation"] == ["all 1 QA candidate(s) rejected: unsupported_answer 1"]


def test_wrong_key_stops_synthesis_early_with_the_reason(make_config, tmp_path, capsys):
    with FakeOpenAI(http_error(401, "Incorrect API key provided")) as fake:
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text("".join(json.dumps({"content": f"seed {i}"}) + "\n" for i in range(8)))
        cfg = make_config(base_url=fake.base_url, max_workers=1, seeds_file=str(seeds))
        cfg_path = tmp_path / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        code = main(["synthesize", "--config", str(cfg_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"run {cfg['run_id']}: error" in out and "stopped early" in out and "HTTP 401" in out
    assert "seeds       8 (done 0)" in out
    assert f"agentflow synthesize --run-id {cfg['run_id']} --resume" in out
    assert "seed error × " in out and "LLMAuthError" in out
    assert len(fake.requests) <= FATAL_REPEAT * 2  # a few seeds, not all eight
