"""Task loading, answer extraction and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.config import ConfigError
from agentflow.rollout import extract_answer, load_tasks, normalize_answer, pass_at_k, score_prediction
from agentflow.rollout.metrics import contains_answer, exact_match, f1, numeric_match, parse_verdict
from agentflow.rollout.tasks import select_tasks

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmark").glob("*.jsonl"))


def test_load_tasks_key_variants_kwargs_and_metadata(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [{"task_id": "a", "query": "q1", "ground_truth": ["x", "y"], "kwargs": {"seed_path": "s"}, "level": 2},
            {"input": "q2", "answer": 7}, {}]
    p.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n")
    a, b = load_tasks(p)
    assert (a.id, a.question, a.answers, a.kwargs, a.metadata) == ("a", "q1", ["x", "y"], {"seed_path": "s"},
                                                                   {"level": 2})
    assert (b.id, b.answers) == ("task_2", ["7"])
    assert [t.question for t in load_tasks(["just a question"])] == ["just a question"]
    p.write_text(json.dumps({"id": "a", "question": "q"}) + "\n" + json.dumps({"id": "a", "question": "r"}))
    with pytest.raises(ConfigError, match=r"t.jsonl:2: duplicate task id 'a'"):
        load_tasks(p)
    p.write_text(json.dumps({"id": "a", "answer": "q"}))
    with pytest.raises(ConfigError, match="t.jsonl:1: task has no question"):
        load_tasks(p)
    with pytest.raises(ConfigError, match="task file not found"):
        load_tasks(tmp_path / "missing.jsonl")


def test_select_tasks():
    tasks = load_tasks([{"id": str(i), "question": "q"} for i in range(5)])
    assert [t.id for t in select_tasks(tasks, ["3", "1"], None)] == ["1", "3"]
    assert [t.id for t in select_tasks(tasks, None, 2)] == ["0", "1"]
    with pytest.raises(ConfigError, match="not in the dataset: 9"):
        select_tasks(tasks, ["9"])


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_shipped_benchmarks_load(path):
    tasks = load_tasks(path)
    assert tasks and all(t.answers for t in tasks)


@pytest.mark.parametrize("text,expected", [
    ("I think <answer> Paris </answer>", "Paris"),
    ("<answer>a</answer> then <ANSWER>b</ANSWER>", "b"),
    ("Reasoning...\nFinal Answer: 1945\n\nExplanation: ...", "1945"),
    ("**Final Answer:** Leonardo da Vinci", "Leonardo da Vinci"),
    ("  just this  ", "just this"),
    (None, ""),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_squad_normalisation_and_text_metrics():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Paris.", "Paris") == 1.0 and exact_match("Paris, France", "Paris") == 0.0
    assert f1("William Shakespeare", "Shakespeare") == pytest.approx(2 / 3)
    assert f1("", "") == 1.0 and f1("x", "") == 0.0
    assert contains_answer("It was Sam Altman, CEO.", "sam altman") == 1.0
    assert contains_answer("Samuel", "Sam") == 0.0


@pytest.mark.parametrize("pred,gold,score", [
    ("The answer is 1,234.", "1234", 1.0), ("3.14159", "3.14", 1.0), ("3.4", "3", 0.0),
    ("about 42%", "42", 1.0), ("12 or 13", "13", 1.0), ("none", "12", 0.0), ("1e3", "1000", 1.0),
    ("Paris", "Paris", 1.0)])
def test_numeric_match(pred, gold, score):
    assert numeric_match(pred, gold) == score


def test_best_of_answer_list_and_edge_cases():
    s = score_prediction("exact_match", "NYC", ["New York City", "nyc"])
    assert s.value == 1.0 and s.details["matched_answer"] == "nyc"
    assert score_prediction("f1", "", ["x"]).value == 0.0
    assert score_prediction("f1", "x", []).value is None


def test_judge_verdict_parsing():
    assert parse_verdict("CORRECT") == 1.0 and parse_verdict("incorrect.") == 0.0
    assert parse_verdict("It is correct, not incorrect") is None
    assert parse_verdict("banana") is None and parse_verdict(None) is None


def test_pass_at_k():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
