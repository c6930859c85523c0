"""The contamination check ``overlaps_benchmark`` (issue 19, item 6): a synthesized
question whose n-gram overlap with a configured benchmark exceeds the threshold is
rejected and stored like the other rejections; a bad ``contamination`` config fails at
start, before any model call or database row."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
from sqlalchemy import select

from agentflow.config import ConfigError
from agentflow.db import make_engine, make_session_factory
from agentflow.db.synthesis import SynthesisQA, SynthesisRun
from agentflow.synthesis import FingerprintMismatch, load_config, synthesize
from agentflow.synthesis.contamination import BenchmarkIndex, parse_contamination
from tests.support.fake_openai import FakeOpenAI, tool_calls, call
from tests.synthesis.conftest import echo_explorer, is_qa, seed_text

COPIED = "Which river flows through the old capital city of the northern kingdom in the story?"
BENCH = [{"id": "b1", "question": COPIED, "answer": "x"},
         {"id": "b2", "query": "<b>How</b> many '; DROP TABLE synthesis_qa; -- moons does Mars have?", "answer": "2"},
         {"id": "b3", "input": "Capital of Peru?", "answer": "Lima"}]


def _bench(tmp_path, rows=BENCH, name="bench.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _qa_script(questions: dict[str, str]):
    """Explore with diag:echo; the QA of seed ``s`` asks ``questions[s]`` (a tag keeps
    the others apart), answered with the last echoed value."""

    def qa(req):
        text = req["messages"][-1]["content"]
        values = re.findall(r'"value": "([^"]+)"', text)
        tag = hashlib.sha1(text.encode()).hexdigest()[:10]
        question = questions.get(seed_text(req)) or f"Which value closes the chain from {values[0]} ({tag})?"
        return tool_calls(call("submit_qa", {"question": question, "answer": values[-1],
                                             "reasoning_steps": ["one", "two"]}))

    return echo_explorer(qa=qa)


def _rows(db_url, run_id):
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        out = {q.question: (q.status, q.reason, q.checks) for q in
               s.scalars(select(SynthesisQA).where(SynthesisQA.run_id == run_id))}
    engine.dispose()
    return out


def test_a_question_copied_from_a_benchmark_is_rejected_as_overlaps_benchmark(server, make_config, tmp_path):
    bench = _bench(tmp_path)
    near = "Which river flows through the old harbour of a southern kingdom?"  # 2 of its 6 4-grams shared
    script = _qa_script({"copied": COPIED.upper().replace("?", "!!"), "short": "capital of   PERU", "near": near})
    with FakeOpenAI(script) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2,
                          contamination={"benchmarks": [str(bench)], "ngram": 4, "threshold": 0.5})
        rep = synthesize(cfg, seeds=["copied", "short", "near", "fresh"])
    assert rep["qa"]["rejected_by_reason"] == {"overlaps_benchmark": 2}
    assert rep["qa"]["accepted"] == 2
    rows = _rows(server.db_url, cfg["run_id"])
    status, reason, checks = rows[COPIED.upper().replace("?", "!!")]
    assert (status, reason) == ("rejected", "overlaps_benchmark")
    found = checks["overlaps_benchmark"]
    assert found["ok"] is False and found["overlap"] == 1.0 and found["ngram"] == 4 and found["threshold"] == 0.5
    assert found["benchmark"] == str(bench) and found["closest"] == COPIED and found["line"] == 1
    # a question shorter than ngram words is compared whole
    assert rows["capital of   PERU"][1] == "overlaps_benchmark"
    assert rows["capital of   PERU"][2]["overlaps_benchmark"]["closest"] == "Capital of Peru?"
    near_checks = rows[near][2]["overlaps_benchmark"]
    assert rows[near][0] == "accepted" and 0 < near_checks["overlap"] <= 0.5
    # every accepted question was checked and kept the outcome
    assert all("overlaps_benchmark" in c for s, _, c in rows.values() if s == "accepted")


def test_without_contamination_nothing_is_checked_and_the_fingerprint_is_unchanged(server, make_config, tmp_path):
    with FakeOpenAI(_qa_script({"copied": COPIED})) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2)
        rep = synthesize(cfg, seeds=["copied"])
        assert rep["qa"]["accepted"] == 1
        assert all("overlaps_benchmark" not in c for _, _, c in _rows(server.db_url, cfg["run_id"]).values())
        # switching the check on is another experiment: a resume with it is refused
        with pytest.raises(FingerprintMismatch, match="contamination"):
            synthesize(cfg, seeds=["copied"], resume=True,
                       contamination={"benchmarks": [str(_bench(tmp_path))]})


def test_the_defaults_and_the_threshold_boundary():
    assert parse_contamination({"benchmarks": ["a.jsonl"]}) == {"benchmarks": ["a.jsonl"], "ngram": 8,
                                                                "threshold": 0.5}
    assert parse_contamination(None) is None


def test_overlap_at_the_threshold_is_kept_and_above_it_rejected(tmp_path):
    bench = _bench(tmp_path, [{"question": "one two three four five"}])
    index = BenchmarkIndex.load({"benchmarks": [str(bench)], "ngram": 2, "threshold": 0.5})
    # bigrams of "one two three x y": (one two) (two three) (three x) (x y) → 2 of 4 shared
    assert index.overlap("one two three x y")["overlap"] == 0.5 and index.overlap("one two three x y")["ok"]
    hit = index.overlap("one two three four x")  # 3 of 4
    assert hit["overlap"] == 0.75 and hit["ok"] is False
    assert index.overlap("nothing in common here")["overlap"] == 0.0
    assert index.overlap("?!")["ok"] is True  # nothing left after normalising


def _bad_files(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "badjson.jsonl").write_text('{"question": "fine one"}\n{not json\n', encoding="utf-8")
    (tmp_path / "noq.jsonl").write_text('{"question": "fine one"}\n{"answer": "no question"}\n', encoding="utf-8")
    (tmp_path / "numq.jsonl").write_text('{"question": 42}\n', encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "punct.jsonl").write_text('{"question": "?!"}\n', encoding="utf-8")
    (tmp_path / "list.json").write_text('{"not": "tasks"}', encoding="utf-8")
    (tmp_path / "binary.jsonl").write_bytes(b'{"question": "caf\xe9 \xff\xfe"}\n')


@pytest.mark.parametrize("value, message", [
    ({"benchmarks": ["missing.jsonl"]}, r"benchmarks\[0\]'.*benchmark file not found: .*missing.jsonl"),
    ({"benchmarks": ["folder"]}, "a folder; name the JSONL file inside it"),
    ({"benchmarks": ["badjson.jsonl"]}, r"badjson.jsonl:2: invalid JSON"),
    ({"benchmarks": ["noq.jsonl"]}, r"noq.jsonl:2: a task with no question"),
    ({"benchmarks": ["numq.jsonl"]}, r"numq.jsonl:1: a task with no question"),
    ({"benchmarks": ["empty.jsonl"]}, "has no questions"),
    ({"benchmarks": ["punct.jsonl"]}, "has no questions"),
    ({"benchmarks": ["list.json"]}, "expected a list of tasks"),
    ({"benchmarks": ["binary.jsonl"]}, r"binary.jsonl: not UTF-8 text \(byte 17: invalid continuation byte"),
    ({"benchmarks": []}, "non-empty list of benchmark files"),
    ({"benchmarks": "bench.jsonl", "ngram": 0}, r"'contamination.ngram' must be an integer >= 1"),
    ({"benchmarks": ["bench.jsonl"], "ngram": 65}, r"'contamination.ngram' must be an integer in \[1, 64\]"),
    ({"benchmarks": ["bench.jsonl"], "ngram": "eight"}, "ngram' must be an integer"),
    ({"benchmarks": ["bench.jsonl"], "ngram": True}, "ngram' must be an integer"),
    ({"benchmarks": ["bench.jsonl"], "threshold": 1}, r"'contamination.threshold' must be a number in \[0, 1\)"),
    ({"benchmarks": ["bench.jsonl"], "threshold": -0.1}, r"'contamination.threshold' must be a number in \[0, 1\]"),
    ({"benchmarks": ["bench.jsonl"], "threshold": "high"}, "threshold' must be a number"),
    ({"benchmarks": ["bench.jsonl"], "treshold": 0.2}, r"unknown key\(s\) 'treshold'"),
    ({"benchmarks": [""]}, r"'contamination.benchmarks\[0\]' must be a file path"),
    ({"benchmarks": [3]}, r"'contamination.benchmarks\[0\]' must be a file path"),
    (["bench.jsonl"], "'contamination' must be an object"),
])
def test_bad_contamination_config_fails_at_start_before_any_model_call(server, make_config, tmp_path, monkeypatch,
                                                                       value, message):
    _bench(tmp_path)
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative benchmark paths are looked up from here
    with FakeOpenAI(_qa_script({})) as fake:
        cfg = make_config(base_url=fake.base_url, contamination=value)
        with pytest.raises(ConfigError, match=message):
            synthesize(cfg, seeds=["a seed"])
        assert fake.requests == []
    engine = make_engine(server.db_url)
    with make_session_factory(engine)() as s:
        assert s.get(SynthesisRun, cfg["run_id"]) is None
    engine.dispose()


def test_a_relative_benchmark_path_is_found_beside_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    _bench(folder)
    config = folder / "synth.json"
    config.write_text(json.dumps({"model_name": "m", "contamination": {"benchmarks": ["bench.jsonl"], "ngram": 3}}))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(config))
    from agentflow.synthesis.config import resolve_path

    index = BenchmarkIndex.load(cfg.contamination, lambda p: resolve_path(p, cfg))
    assert index.files == [str(folder / "bench.jsonl")] and index.overlap(COPIED)["overlap"] == 1.0


def test_the_cli_reports_a_bad_contamination_config_in_one_line(tmp_path, capsys):
    from agentflow.cli import main

    config = tmp_path / "synth.json"
    config.write_text(json.dumps({"model_name": "m", "contamination": {"benchmarks": ["nope.jsonl"]}}))
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"content": "x"}\n')
    assert main(["synthesize", "--config", str(config), "--seeds", str(seeds), "--database-url",
                 f"sqlite:///{tmp_path}/db.sqlite"]) == 2
    err = capsys.readouterr().err
    assert "benchmark file not found" in err and "Traceback" not in err
