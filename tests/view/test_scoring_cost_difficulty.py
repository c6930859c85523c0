"""The viewer shows a rollout run's chosen scoring and its cost (unknown as unknown, never
$0), and on a synthesis run the cost per accepted QA pair and each QA pair's difficulty
(pass@k from the rollout that ran it as a benchmark)."""
from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

pytestmark = pytest.mark.timeout(120)


def _db(built):
    return closing(sqlite3.connect(f"file:{built.home / 'agentflow.db'}?mode=ro", uri=True))


def test_rollout_run_shows_the_newest_rescoring_and_its_accuracy(page, built):
    with _db(built) as db:
        scoring_id, metric = db.execute("SELECT id, metric FROM rollout_scorings WHERE run_id = ? ORDER BY id DESC",
                                        (built.rollout_a,)).fetchone()
        rows = db.execute("SELECT s.score, s.scored, a.status FROM rollout_attempt_scores s JOIN rollout_attempts a "
                          "ON a.id = s.attempt_id WHERE s.scoring_id = ?", (scoring_id,)).fetchall()
    counted = [score or 0.0 for score, scored, status in rows if scored or status != "completed"]
    accuracy = sum(counted) / len(counted)
    page.goto(f"/rollout/{built.rollout_a}")
    card = page.tab.inner_text("#scoring")
    assert f"#{scoring_id} f1" in card and metric == "f1" and "as run: exact_match" in card
    assert page.tab.inner_text('[data-field="accuracy"]') == f"{accuracy:.3f}"
    assert f"#{scoring_id} f1" in page.tab.inner_text("#scorings")
    page.shot("rollout-run-scoring")


def test_rollout_cost_is_shown_and_an_unpriced_model_is_unknown_never_zero(page, built):
    with _db(built) as db:
        prompt, completion, cached = db.execute(
            "SELECT sum(prompt_tokens), sum(completion_tokens), sum(cached_prompt_tokens) FROM rollout_attempts "
            "WHERE run_id = ?", (built.rollout_a,)).fetchone()
    assert prompt > 0 and not cached
    cost = (prompt * 3.0 + completion * 15.0) / 1e6
    page.goto(f"/rollout/{built.rollout_a}")
    assert page.tab.inner_text('#cost [data-field="cost"]') == (f"${cost:.4f}" if cost >= 0.01 else f"${cost:.6f}")
    page.goto(f"/rollout/{built.rollout_b}")
    card = page.tab.inner_text("#cost")
    assert page.tab.inner_text('#cost [data-field="cost"]') == "unknown" and "no price for model-b" in card
    assert "$0" not in card
    page.goto(f"/rollout/{built.rollout_b}")  # never rescored: the run's own scores, said so
    assert "as run" in page.tab.inner_text("#scoring") and "never rescored" in page.tab.inner_text("#scoring")


def test_synthesis_run_shows_cost_per_accepted_qa_and_each_pairs_difficulty(page, built):
    page.goto(f"/synthesis/{built.synthesis}")
    with _db(built) as db:
        accepted = [r[0] for r in db.execute("SELECT id FROM synthesis_qa WHERE run_id = ? AND status = 'accepted'",
                                              (built.synthesis,))]
        tokens = db.execute("SELECT (SELECT sum(prompt_tokens) FROM synthesis_nodes WHERE run_id = ?) + "
                            "(SELECT sum(prompt_tokens) FROM synthesis_qa WHERE run_id = ?), "
                            "(SELECT sum(completion_tokens) FROM synthesis_nodes WHERE run_id = ?) + "
                            "(SELECT sum(completion_tokens) FROM synthesis_qa WHERE run_id = ?)",
                            (built.synthesis,) * 4).fetchone()
    assert accepted
    per_qa = (tokens[0] * 3.0 + tokens[1] * 15.0) / 1e6 / len(accepted)
    shown = page.tab.inner_text('#cost [data-field="cost_per_qa"]')
    assert shown == (f"${per_qa:.4f}" if per_qa >= 0.01 else f"${per_qa:.6f}")
    for qa_id in accepted:
        cell = page.tab.locator(f'#qa-table tr:has(a[href$="#qa-{qa_id}"]) td.difficulty').inner_text()
        assert "1/2" in cell and "pass@1 0.500" in cell and "strong" in cell
    rejected = page.tab.locator("#qa-table tr.qa-rejected td.difficulty").all_inner_texts()
    assert rejected and all(t.strip() == "not run" for t in rejected)
    page.shot("synthesis-run-difficulty")
    page.tab.click(f'#qa-table tr:has(a[href$="#qa-{accepted[0]}"]) td.difficulty a')
    page.tab.wait_for_url(f"**/rollout/{built.rollout_qa}")
    assert page.tab.inner_text("#sources") == (f"Tasks are synthesized QA pairs of {built.synthesis} "
                                               f"({len(accepted)}): each pair's pass@k is shown there.")
    page.tab.click("#sources a")
    page.tab.wait_for_url(f"**/synthesis/{built.synthesis}")
    page.goto(f"/rollout/{built.rollout_a}")
    assert page.tab.locator("#sources").count() == 0


@pytest.mark.parametrize("query, message", [("scoring=999999", "has no scoring 999999"),
                                            ("scoring=abc", "scoring must be a whole number"),
                                            ("scoring=-1", "scoring must be at least 1")])
def test_a_bad_scoring_parameter_is_a_clear_400(page, built, query, message):
    response = page.goto(f"/rollout/{built.rollout_a}?{query}")
    assert response.status == 400
    assert message in page.tab.inner_text("main")
    page.allow_http_errors()  # Chromium logs the 400 as a failed load
