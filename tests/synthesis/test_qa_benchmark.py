"""A synthesized QA set runs as a benchmark and gets its pass@k back (issue 19, item 5).

Synthesize with the scripted model → ``agentflow runs export SYNTH --as-benchmark`` →
``rollout`` with ``n_samples`` over the file → each QA pair's pass@k in the database
(``synthesis_qa_attempts``) and through ``agentflow runs qa``; a resume and a rescoring
change it as they change the rollout.
"""
from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from agentflow.cli import main
from agentflow.db import make_engine, make_session_factory
from agentflow.db.rollout import RolloutAttempt
from agentflow.db.synthesis import QA_ACCEPTED, SynthesisQA, SynthesisQAAttempt
from agentflow.rollout import load_tasks, rollout
from agentflow.synthesis import synthesize
from agentflow.synthesis.benchmark import qa_difficulty
from tests.support.fake_openai import FakeOpenAI, first_user, http_error
from tests.synthesis.conftest import echo_explorer, read_jsonl

N = 4
SEEDS = [{"content": f"seed {name}", "kwargs": {"seed_path": f"docs/{name}.md", "db_id": name}}
         for name in ("alpha", "beta", "gamma", "delta")]


class Agent:
    """A scripted agent answering each question in one turn: right for the first
    ``right[question]`` requests of that question, wrong (``wrong(answer)``) after; a
    question in ``down`` gets HTTP 500. Deterministic whatever the interleaving: it
    counts requests per question."""

    def __init__(self, answers: dict[str, str], right: dict[str, int], wrong=lambda a: "nope", down=()):
        self.answers, self.right, self.wrong, self.down = answers, right, wrong, set(down)
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, req):
        q = first_user(req)
        question = next(k for k in self.answers if k in q)
        if question in self.down:
            return http_error(500, "scripted outage", retry_after_ms=1)
        with self.lock:
            n = self.seen[question] = self.seen.get(question, 0) + 1
        answer = self.answers[question]
        return f"Final Answer: {answer if n <= self.right[question] else self.wrong(answer)}"


def _db(url):
    engine = make_engine(url)
    return engine, make_session_factory(engine)()


def _synthesized(make_config, tmp_path):
    with FakeOpenAI(echo_explorer()) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2)
        rep = synthesize(cfg, seeds=SEEDS)
    assert rep["qa"]["accepted"] == len(SEEDS)
    return cfg


def _rollout_config(server, tmp_path, data_path, base_url, run_id, **keys):
    cfg = {"benchmark_name": "synth-qa", "model_name": "strong-model", "data_path": str(data_path),
           "available_tools": ["diag:echo"], "sandbox_server_url": server.url, "database_url": server.db_url,
           "output_dir": str(tmp_path / "ro"), "run_id": run_id, "max_retries": 0, "n_samples": N,
           "evaluation_metric": "exact_match", "max_workers": 2, "base_url": base_url}
    cfg.update(keys)
    return cfg


def _export(server, cfg, out, capsys) -> list[dict]:
    assert main(["runs", "export", cfg["run_id"], "--as-benchmark", "-o", str(out),
                 "--database-url", server.db_url]) == 0
    assert f"wrote {len(SEEDS)} tasks to {out}" in capsys.readouterr().out
    return read_jsonl(out)


def _qa_cli(db_url, synth_id, capsys, *flags) -> list[dict]:
    capsys.readouterr()
    assert main(["runs", "qa", synth_id, "--json", "--database-url", db_url, *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_synthesized_qa_runs_as_a_benchmark_and_gets_its_pass_at_k_back(server, make_config, tmp_path, capsys):
    synth = _synthesized(make_config, tmp_path)
    assert main(["runs", "show", synth["run_id"], "--database-url", server.db_url]) == 0
    assert "difficulty  not run as a benchmark yet" in capsys.readouterr().out
    lines = _export(server, synth, tmp_path / "bench.jsonl", capsys)

    # the file is a benchmark rollout reads, keeping each seed's kwargs and naming its QA row
    engine, s = _db(server.db_url)
    with s:
        accepted = {q.id: q for q in s.scalars(select(SynthesisQA).where(SynthesisQA.run_id == synth["run_id"],
                                                                          SynthesisQA.status == QA_ACCEPTED))}
    tasks = load_tasks(tmp_path / "bench.jsonl")
    assert sorted(t.id for t in tasks) == sorted(f"qa-{i}" for i in accepted)
    for line, task in zip(lines, tasks):
        qa = accepted[line["synthesis"]["qa_id"]]
        assert task.id == f"qa-{qa.id}" and task.question == qa.question and task.answer == qa.answer
        assert line["synthesis"]["run_id"] == synth["run_id"]
        assert task.kwargs == SEEDS[line["synthesis"]["seed_index"]]["kwargs"]

    answers = {t.question: t.answer for t in tasks}
    wanted = dict(zip([t.question for t in tasks], [0, 2, 4, 1]))  # solves out of N per QA pair
    with FakeOpenAI(Agent(answers, wanted)) as fake:
        summary = rollout(_rollout_config(server, tmp_path, tmp_path / "bench.jsonl", fake.base_url, "ro-qa"),
                          progress=False)
    assert summary["status"] == "success", (summary["error"], summary["top_errors"])
    assert summary["total_samples"] == len(tasks) * N

    with s:
        links = s.scalar(select(func.count()).select_from(SynthesisQAAttempt)
                         .where(SynthesisQAAttempt.rollout_run_id == "ro-qa"))
        assert links == len(tasks) * N
        diff = qa_difficulty(s, synth["run_id"])
    engine.dispose()
    by_question = {accepted[qa_id].question: d for qa_id, (d,) in diff.items()}
    for question, solved in wanted.items():
        d = by_question[question]
        assert (d.samples, d.solved, d.rollout_run_id, d.model_name) == (N, solved, "ro-qa", "strong-model")
        assert d.pass_at_k["pass@1"] == pytest.approx(solved / N)
        assert d.pass_at_k[f"pass@{N}"] == (1.0 if solved else 0.0)

    # "QA that a strong model solves 1-3 of N times"
    rows = _qa_cli(server.db_url, synth["run_id"], capsys, "--solved", "1-3", "--of", str(N), "--model", "strong-model")
    assert sorted(r["question"] for r in rows) == sorted(q for q, n in wanted.items() if 1 <= n <= 3)
    assert all(r["difficulty"][0]["solved"] in (1, 2) for r in rows)
    assert _qa_cli(server.db_url, synth["run_id"], capsys, "--solved", "1-3", "--of", str(N + 1)) == []
    assert _qa_cli(server.db_url, synth["run_id"], capsys, "--solved", "1-3", "--model", "weak-model") == []
    capsys.readouterr()
    assert main(["runs", "qa", synth["run_id"], "--solved", "1-3", "--of", str(N), "--database-url",
                 server.db_url]) == 0
    text = capsys.readouterr().out
    assert "solved 2/4 by strong-model (ro-qa) pass@1 0.500" in text and "solved 1/4 by strong-model" in text
    assert "2 QA pair(s) matched" in text and "solved 0/4" not in text and "solved 4/4" not in text
    assert main(["runs", "show", synth["run_id"], "--database-url", server.db_url]) == 0
    assert f"difficulty  {len(tasks)} of {len(tasks)} accepted QA run as a benchmark by 1 rollout run(s)" \
        in capsys.readouterr().out
    everything = _qa_cli(server.db_url, synth["run_id"], capsys)
    assert len(everything) == len(tasks) and all(len(r["difficulty"]) == 1 for r in everything)

    # the same filter on the export: the hard subset as a new benchmark
    capsys.readouterr()
    assert main(["runs", "export", synth["run_id"], "--as-benchmark", "--solved", "1-3", "--of", str(N),
                 "-o", str(tmp_path / "hard.jsonl"), "--database-url", server.db_url]) == 0
    assert sorted(t.question for t in load_tasks(tmp_path / "hard.jsonl")) == sorted(r["question"] for r in rows)


def test_the_link_survives_a_resume_and_a_rescore_updates_the_difficulty(server, make_config, tmp_path, capsys):
    synth = _synthesized(make_config, tmp_path)
    _export(server, synth, tmp_path / "bench.jsonl", capsys)
    tasks = load_tasks(tmp_path / "bench.jsonl")
    answers = {t.question: t.answer for t in tasks}
    down = tasks[0].question
    wanted = {t.question: 1 for t in tasks}
    # wrong answers contain the right one: exact_match fails them, contains_answer passes them
    wrong = lambda a: f"it is {a}, I think"  # noqa: E731
    cfg = _rollout_config(server, tmp_path, tmp_path / "bench.jsonl", None, "ro-resume", max_workers=1)
    with FakeOpenAI(Agent(answers, wanted, wrong, down=[down])) as fake:
        first = rollout({**cfg, "base_url": fake.base_url}, progress=False)
    assert first["status"] == "error" and first["infra_errors"] == N

    engine, s = _db(server.db_url)
    with s:
        qa_down = next(q.id for q in s.scalars(select(SynthesisQA).where(SynthesisQA.run_id == synth["run_id"]))
                       if q.question == down)
        d = qa_difficulty(s, synth["run_id"])[qa_down][0]
        assert (d.samples, d.solved) == (0, 0)  # infrastructure failures are not counted
    with FakeOpenAI(Agent(answers, wanted, wrong)) as fake:
        again = rollout({**cfg, "base_url": fake.base_url, "resume": True}, progress=False)
    assert again["status"] == "success"
    with s:
        s.expire_all()
        attempts = s.scalar(select(func.count()).select_from(RolloutAttempt).where(RolloutAttempt.run_id == "ro-resume"))
        links = s.scalar(select(func.count()).select_from(SynthesisQAAttempt)
                         .where(SynthesisQAAttempt.rollout_run_id == "ro-resume"))
        assert attempts == links == len(tasks) * N + N  # the failed tries stay, linked too
        diff = qa_difficulty(s, synth["run_id"])
        assert {(d.samples, d.solved) for (d,) in diff.values()} == {(N, 1)}

    assert main(["runs", "rescore", "ro-resume", "--metric", "contains_answer", "--database-url", server.db_url]) == 0
    rows = _qa_cli(server.db_url, synth["run_id"], capsys)
    assert [r["difficulty"][0]["solved"] for r in rows] == [N] * len(tasks)
    assert {r["difficulty"][0]["metric"] for r in rows} == {"contains_answer"}
    assert _qa_cli(server.db_url, synth["run_id"], capsys, "--solved", "1-3", "--of", str(N)) == []
    engine.dispose()


HOSTILE = "Which value closes «the chain» \"quoted\"\n<script>alert(1)</script>' OR 1=1; --\u2028\x00 {tag}?"


def test_hostile_qa_text_round_trips_through_the_benchmark_file(server, make_config, tmp_path, capsys):
    import hashlib
    import re

    from tests.synthesis.conftest import echo_qa

    def qa(req):
        tag = hashlib.sha1(req["messages"][-1]["content"].encode()).hexdigest()[:12]
        values = re.findall(r'"value": "([^"]+)"', req["messages"][-1]["content"])
        return echo_qa(req, question=HOSTILE.format(tag=tag) + " " + values[0], answer=values[-1])

    with FakeOpenAI(echo_explorer(qa=qa)) as fake:
        cfg = make_config(base_url=fake.base_url, max_depth=2, branching_factor=1, min_depth=2,
                          question_similarity_threshold=0.999)
        rep = synthesize(cfg, seeds=SEEDS[:2])
        assert rep["qa"]["accepted"] == 2, rep["qa"]
    capsys.readouterr()
    assert main(["runs", "export", cfg["run_id"], "--as-benchmark", "-o", "-", "--database-url", server.db_url]) == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(lines) == 2  # one JSON line per task: the newlines inside are escaped
    engine, s = _db(server.db_url)
    with s:
        stored = {q.id: (q.question, q.answer) for q in s.scalars(select(SynthesisQA).where(
            SynthesisQA.run_id == cfg["run_id"]))}
    engine.dispose()
    for line in lines:
        assert (line["question"], line["answer"]) == stored[line["synthesis"]["qa_id"]]
        assert "<script>" in line["question"] and "\n" in line["question"]


@pytest.mark.parametrize("flags, message", [
    (["--solved", "3-1"], "from low to high"),
    (["--solved", "x"], "must be N or N-M"),
    (["--solved", "-1"], "must be N or N-M"),
    (["--of", "0"], "at least 1"),
    (["--of", "eight"], "whole number"),
    (["--solved", "1-5", "--of", "4"], "more solves than --of 4"),
])
def test_bad_solved_filters_are_refused_before_the_database_is_opened(tmp_path, capsys, flags, message):
    db = f"sqlite:///{tmp_path}/never.db"
    for command in (["runs", "qa", "some-run"], ["runs", "export", "some-run", "--as-benchmark"]):
        assert main([*command, *flags, "--database-url", db]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()


def test_wrong_runs_and_flag_mixes_get_a_clear_error(server, make_config, tmp_path, capsys):
    db = ["--database-url", server.db_url]
    assert main(["runs", "export", "no-such-run", "--as-benchmark", *db]) == 2
    assert "no synthesis run 'no-such-run'" in capsys.readouterr().err
    assert main(["runs", "qa", "no-such-run", *db]) == 2
    assert "no synthesis run 'no-such-run'" in capsys.readouterr().err
    assert main(["runs", "export", "x", "--as-benchmark", "--format", "sharegpt", *db]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["runs", "export", "x", "--solved", "1-3", *db]) == 2
    assert "only apply with --as-benchmark" in capsys.readouterr().err
    assert main(["runs", "export", "x", "--as-benchmark", "--min-score", "1", *db]) == 2
    assert "do not apply with --as-benchmark" in capsys.readouterr().err
    with FakeOpenAI("Final Answer: x") as fake:  # a rollout run is not a synthesis run
        rollout(_rollout_config(server, tmp_path, _tasks(tmp_path, [{"id": "t", "question": "q?", "answer": "x"}]),
                                fake.base_url, "ro-not-synth", n_samples=1), progress=False)
    assert main(["runs", "export", "ro-not-synth", "--as-benchmark", *db]) == 2
    assert "is a rollout run" in capsys.readouterr().err
    assert main(["runs", "qa", "ro-not-synth", *db]) == 2
    assert "is a rollout run" in capsys.readouterr().err


def _tasks(tmp_path, rows, name="tasks.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_task_lines_naming_no_real_qa_pair_run_but_link_nothing(server, make_config, tmp_path, capsys, caplog):
    synth = _synthesized(make_config, tmp_path)
    lines = _export(server, synth, tmp_path / "bench.jsonl", capsys)
    good, other = lines[0], lines[1]
    rows = [
        good,  # the one real link
        {**other, "id": "edited", "question": other["question"] + " (edited)"},  # the question changed
        {**other, "id": "other-run", "synthesis": {**other["synthesis"], "run_id": "another-run"}},
        {**other, "id": "missing", "synthesis": {"run_id": synth["run_id"], "qa_id": 10 ** 9}},
        {**other, "id": "string-id", "synthesis": {"run_id": synth["run_id"], "qa_id": str(other["synthesis"]["qa_id"])}},
        {**other, "id": "bool-id", "synthesis": {"run_id": synth["run_id"], "qa_id": True}},
        {**other, "id": "not-an-object", "synthesis": "'; DROP TABLE synthesis_qa; --"},
        {**other, "id": "list", "synthesis": [1, 2]},
    ]
    answers = {r["question"]: r["answer"] for r in rows}
    with FakeOpenAI(Agent(answers, {q: 99 for q in answers})) as fake:
        summary = rollout(_rollout_config(server, tmp_path, _tasks(tmp_path, rows), fake.base_url, "ro-hostile",
                                          n_samples=2), progress=False)
    assert summary["status"] == "success" and summary["completed"] == len(rows) * 2
    assert "7 of 8 task(s) name a synthesized QA pair that is not linked" in caplog.text
    engine, s = _db(server.db_url)
    with s:
        linked = s.execute(select(SynthesisQAAttempt.qa_id, RolloutAttempt.task_id).join(
            RolloutAttempt, RolloutAttempt.id == SynthesisQAAttempt.attempt_id)
            .where(SynthesisQAAttempt.rollout_run_id == "ro-hostile")).all()
        assert sorted(linked) == [(good["synthesis"]["qa_id"], good["id"])] * 2
        assert s.scalar(select(func.count()).select_from(SynthesisQA)) > 0  # nothing was dropped
    engine.dispose()


def test_a_benchmark_line_holding_a_raw_line_separator_is_one_task(tmp_path):
    # JSON allows U+2028 / U+0085 unescaped inside strings; JSONL lines end at "\n" only
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": "a", "question": "one\u2028two\x85three", "answer": "x"}\n'
                    '{"id": "b", "question": "second", "answer": "y"}\r\n', encoding="utf-8")
    tasks = load_tasks(path)
    assert [(t.id, t.question) for t in tasks] == [("a", "one\u2028two\x85three"), ("b", "second")]


def test_a_qa_pair_deleted_while_the_rollout_runs_loses_no_attempt(server, make_config, tmp_path, capsys, caplog):
    synth = _synthesized(make_config, tmp_path)
    lines = _export(server, synth, tmp_path / "bench.jsonl", capsys)
    gone = lines[0]
    answers = {line["question"]: line["answer"] for line in lines}
    agent = Agent(answers, {q: 99 for q in answers})

    def script(req):  # the synthesis row of the first task vanishes before its first attempt is stored
        if gone["question"] in first_user(req):
            engine, s = _db(server.db_url)
            with s:
                s.execute(SynthesisQA.__table__.delete().where(SynthesisQA.id == gone["synthesis"]["qa_id"]))
                s.commit()
            engine.dispose()
        return agent(req)

    with FakeOpenAI(script) as fake:
        summary = rollout(_rollout_config(server, tmp_path, tmp_path / "bench.jsonl", fake.base_url, "ro-gone",
                                          max_workers=1), progress=False)
    assert summary["status"] == "success" and summary["completed"] == len(lines) * N
    assert f"synthesized QA pair {gone['synthesis']['qa_id']} is no longer in the database" in caplog.text
    engine, s = _db(server.db_url)
    with s:
        linked = s.scalar(select(func.count()).select_from(SynthesisQAAttempt)
                          .where(SynthesisQAAttempt.rollout_run_id == "ro-gone"))
        stored = s.scalar(select(func.count()).select_from(RolloutAttempt).where(RolloutAttempt.run_id == "ro-gone"))
    engine.dispose()
    assert stored == len(lines) * N and linked == (len(lines) - 1) * N


def test_a_benchmark_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    from agentflow.config import ConfigError

    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a", "question": "café?", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.jsonl: not UTF-8 text \(byte 28"):
        load_tasks(path)
