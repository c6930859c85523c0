"""Every page of the real viewer (``agentflow view`` in its own process) in headless
Chromium, over a database made by real rollout and synthesis runs: pages load without
console errors (a CSP violation is one), tables sort and filter, a trajectory shows every
tool call with its audit link, the tree marks the selected paths, compare shows the
changed tasks. Each page is saved as a screenshot."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from .scenario import BENCHMARK, TASKS

pytestmark = pytest.mark.timeout(120)


def _db(built):
    return closing(sqlite3.connect(f"file:{built.home / 'agentflow.db'}?mode=ro", uri=True))


def _column(page, table: str, index: int) -> list[str]:
    return page.tab.locator(f"#{table} tbody tr td:nth-child({index})").all_inner_texts()


def test_runs_list_newest_first_with_filters_and_search(page, built):
    page.goto("/runs")
    ids = page.tab.locator("#runs a.run-link").all_inner_texts()
    assert ids == [built.rollout_qa, built.synthesis, built.rollout_b, built.rollout_a, built.demo_synthesis,
                   built.demo_rollout]
    row = page.tab.locator(f'tr[data-run="{built.rollout_a}"]')
    assert "success" in row.inner_text() and "pass@2" in row.inner_text() and "18/18" in row.inner_text()
    assert "error" in page.tab.locator(f'tr[data-run="{built.rollout_b}"] [data-field="status"]').inner_text()
    page.shot("runs")

    page.tab.select_option("#run-filters select[name=kind]", "synthesis")
    page.tab.click("#run-filters button")
    page.tab.wait_for_url("**kind=synthesis**")
    assert page.tab.locator("#runs a.run-link").all_inner_texts() == [built.synthesis, built.demo_synthesis]
    page.goto("/runs?status=error")
    assert page.tab.locator("#runs a.run-link").all_inner_texts() == [built.rollout_b]
    page.goto("/runs")
    page.tab.fill("#run-filters input[name=q]", "model-")
    page.tab.press("#run-filters input[name=q]", "Enter")
    page.tab.wait_for_url("**q=model-**")
    assert page.tab.locator("#runs a.run-link").all_inner_texts() == [built.rollout_b, built.rollout_a]
    page.tab.select_option("#run-filters select[name=benchmark]", BENCHMARK)
    page.tab.click("#run-filters button")
    page.tab.wait_for_url(f"**benchmark={BENCHMARK}**")
    assert set(page.tab.locator("#runs a.run-link").all_inner_texts()) == {built.rollout_a, built.rollout_b}


def test_rollout_run_summary_breakdown_chart_and_task_table_sorts_filters(page, built):
    page.goto(f"/rollout/{built.rollout_a}")
    text = page.tab.text_content("main")
    assert "pass@2" in text and "9 tasks × 2" in text and "max_turns" in page.tab.inner_text("#breakdown")
    assert "no final answer after max_turns=3" in page.tab.inner_text("#top-errors")
    assert page.tab.locator("svg.chart rect.bar").count() == 10
    page.shot("rollout-run", readme_full_page=True)
    page.tab.click("details.config summary")
    assert "fingerprint" in page.tab.inner_text("details.config") and '"n_samples": 2' in page.tab.inner_text(
        "details.config")
    tasks = _column(page, "task-table", 1)
    assert tasks == sorted(t["id"] for t in TASKS)  # default: by task id
    assert page.tab.locator("#task-table tbody tr").first.locator("a.sample").count() == 2  # samples side by side

    page.tab.click('#task-table a.sort[data-sort="score"]')
    page.tab.wait_for_url("**sort=score**")
    scores = [float(s) for s in _column(page, "task-table", 4)]
    assert scores == sorted(scores) and scores[0] == 0.0
    page.tab.click('#task-table a.sort[data-sort="score"]')  # again: descending
    page.tab.wait_for_url("**dir=desc**")
    scores = [float(s) for s in _column(page, "task-table", 4)]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    page.tab.select_option("#task-filters select[name=outcome]", "max_turns")
    page.tab.click("#task-filters button")
    page.tab.wait_for_url("**outcome=max_turns**")  # the filtered page, not the one being left
    assert _column(page, "task-table", 1) == ["loops"]
    page.tab.select_option("#task-filters select[name=outcome]", "fail")
    page.tab.click("#task-filters button")
    page.tab.wait_for_url("**outcome=fail**")
    assert set(_column(page, "task-table", 1)) == {"loops", "say-1", "wrong"}
    page.goto(f"/rollout/{built.rollout_a}?q=image")
    assert _column(page, "task-table", 1) == ["image"]
    page.goto(f"/rollout/{built.rollout_a}?per=25&page=1&sort=tokens&dir=desc")
    tokens = [int(t.replace(",", "")) for t in _column(page, "task-table", 8)]
    assert tokens == sorted(tokens, reverse=True)


def test_trajectory_shows_every_tool_call_with_its_full_result_and_audit_row(page, built):
    with _db(built) as db:
        newest = db.execute("SELECT a.task_id, a.id, count(c.id), sum(c.request_id IS NOT NULL) FROM rollout_attempts a "
                            "LEFT JOIN rollout_tool_calls c ON c.attempt_id = a.id WHERE a.run_id = ? "
                            "GROUP BY a.id", (built.rollout_a,)).fetchall()
    by_task: dict[str, list] = {}
    for task, attempt, calls, sent in newest:
        by_task.setdefault(task, []).append((attempt, calls, sent))
    for task, attempts in by_task.items():
        page.goto(f"/rollout/{built.rollout_a}/tasks/{task}")
        assert page.tab.locator("article.trajectory").count() == 2  # both samples, side by side
        for attempt, calls, sent in attempts:
            article = page.tab.locator(f"#attempt-{attempt}")
            assert article.locator(".call").count() == calls, task
            assert article.locator(".call a.audit-link").count() == sent, task  # every executed call: its audit row
        assert page.tab.locator("details.msg.system").count() in (0, 2)
        assert not page.tab.locator("details.msg.system[open]").count()  # the system prompt is folded

    page.goto(f"/rollout/{built.rollout_a}/tasks/tool-fails")
    assert page.tab.locator(".call.failed").count() == 2 and "asked to fail" in page.tab.inner_text(".call.failed >> nth=0")
    assert "code 2001" in page.tab.inner_text(".call.failed >> nth=0")
    page.goto(f"/rollout/{built.rollout_a}/tasks/unknown-tool")
    assert "unknown tool" in page.tab.inner_text(".call >> nth=0") and "not executed" in page.tab.inner_text(".call >> nth=0")
    page.goto(f"/rollout/{built.rollout_a}/tasks/bad-json")
    assert "not valid JSON" in page.tab.inner_text(".call >> nth=0")
    page.goto(f"/rollout/{built.rollout_a}/tasks/loops")
    assert "no final answer after max_turns=3" in page.tab.inner_text(".verdict.fail >> nth=0")
    page.goto(f"/rollout/{built.rollout_b}/tasks/loops")  # retried on resume: the newest shown, the first listed
    assert "attempt 2" in page.tab.inner_text("article.trajectory") and "infra_error" in page.tab.inner_text(
        "article.trajectory")
    page.tab.click("#older a")
    page.tab.wait_for_url("**/attempts/**")
    assert "attempt 1" in page.tab.inner_text("article.trajectory")

    page.goto(f"/rollout/{built.rollout_a}/tasks/image")
    img = page.tab.locator("figure.image img").first
    assert img.get_attribute("src").startswith("data:image/png;base64,iVBOR")
    assert img.evaluate("i => i.complete && i.naturalWidth") == 24  # decoded and drawn
    assert "[image 1: PNG 24×16" in page.tab.inner_text(".call >> nth=0")

    page.goto(f"/rollout/{built.rollout_a}/tasks/say-0")
    verdict = page.tab.inner_text(".verdict >> nth=0")
    assert "w0" in verdict and "exact_match" in verdict and "pass" in verdict
    stdout = page.tab.inner_text(".call >> nth=1 >> .part-stdout")
    assert "w0" in stdout  # bash:run's stdout as text, from the full stored result
    page.goto(f"/rollout/{built.rollout_a}/tasks/say-1")  # one sample right, one wrong
    assert page.tab.locator(".verdict.pass").count() == 1 and page.tab.locator(".verdict.fail").count() == 1
    page.shot("trajectory")
    page.goto(f"/rollout/{built.rollout_a}/tasks/say-0")

    # the audit link leads to the server's row, and that row back to the trajectory
    page.tab.click(".call >> nth=1 >> a.audit-link")
    page.tab.wait_for_url("**/audit/**")
    fields = page.tab.inner_text("#audit-fields")
    assert "request id" in fields and "sha256" in fields and "bash_" in fields  # its session
    assert "bash:run" in page.tab.inner_text("h1")
    page.shot("audit")
    page.tab.click("a.trajectory-link")
    page.tab.wait_for_url("**/attempts/**")
    assert page.tab.locator("article.trajectory").count() == 1


def test_hostile_output_is_shown_as_text_and_never_runs(page, built):
    page.goto(f"/rollout/{built.rollout_a}/tasks/hostile")
    text = page.tab.inner_text("main")
    assert "<script>window.__pwned = 1</script>" in text  # shown, escaped
    assert page.tab.evaluate("window.__pwned") is None
    assert page.tab.locator("main script, main img[src=x]").count() == 0
    csp = page.goto(f"/rollout/{built.rollout_a}").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_compare_shows_changed_tasks_then_two_trajectories(page, built):
    page.goto(f"/compare?a={built.rollout_a}&b={built.rollout_b}")
    changes = dict(zip(_column(page, "compare-table", 1), _column(page, "compare-table", 5)))
    assert changes == {"say-0": "regressed", "wrong": "improved", "say-1": "improved"}
    assert "improved2" in page.tab.text_content("#compare-counts").replace(" ", "").replace("\n", "")
    page.tab.click('tr[data-task="say-0"] a.side-link')
    page.tab.wait_for_url("**task=say-0**")
    columns = page.tab.locator("#pair ~ .side-by-side .column")
    assert columns.count() == 2
    assert "w0" in columns.nth(0).locator(".verdict").inner_text() and "w9" in columns.nth(1).locator(
        ".verdict").inner_text()
    page.shot("compare")
    page.goto(f"/compare?a={built.rollout_a}&b={built.rollout_b}&show=all")
    assert len(_column(page, "compare-table", 1)) == len(TASKS)
    page.goto("/compare")
    page.tab.select_option("#compare-form select[name=a]", built.rollout_a)
    page.tab.select_option("#compare-form select[name=b]", built.rollout_b)
    page.tab.click("#compare-form button")
    page.tab.wait_for_url(f"**b={built.rollout_b}**")
    assert "regressed" in page.tab.inner_text("#compare-table")


def test_synthesis_run_and_the_tree_with_its_selected_paths(page, built):
    page.goto(f"/synthesis/{built.synthesis}")
    assert page.tab.locator("#seeds tbody tr").count() == 2
    qa = page.tab.inner_text("#qa-table")
    assert "answer_leaked" in qa and "accepted" in qa
    page.shot("synthesis-run")
    page.tab.select_option("#qa-filters select[name=qa]", "accepted")
    page.tab.click("#qa-filters button")
    page.tab.wait_for_url("**qa=accepted**")
    assert page.tab.locator("#qa-table tbody tr").count() == 1

    with _db(built) as db:
        seed_id = db.execute("SELECT id FROM synthesis_seeds WHERE run_id = ? AND seed_index = 0",
                             (built.synthesis,)).fetchone()[0]
        nodes = dict(db.execute("SELECT id, kind FROM synthesis_nodes WHERE seed_id = ?", (seed_id,)).fetchall())
        paths = [(pid, json.loads(ids), sel) for pid, ids, sel in db.execute(
            "SELECT id, node_ids, selected FROM synthesis_paths WHERE seed_id = ?", (seed_id,))]
        refused = [n for n, r in db.execute("SELECT id, refused FROM synthesis_nodes WHERE seed_id = ?", (seed_id,))
                   if any(x["reason"] == "duplicate" for x in json.loads(r))]
    page.goto(f"/synthesis/{built.synthesis}/seeds/0")
    svg = page.tab.locator("#tree-svg")
    assert svg.locator("a.node").count() == len(nodes)
    selected = {i for _, ids, sel in paths if sel for i in ids} | {i for i, k in nodes.items() if k == "root"}
    drawn_sel = {int(x) for x in svg.locator("a.node.sel").evaluate_all("els => els.map(e => e.dataset.node)")}
    assert drawn_sel == selected
    assert svg.locator("line.edge.sel").count() == len(selected) - 1  # each selected node's edge to its parent
    assert svg.locator("a.node.k-failed").count() == sum(1 for k in nodes.values() if k == "failed") >= 1
    assert svg.locator("a.node.err").count() >= 1  # the tool call that failed
    assert {int(x) for x in svg.locator("a.node.dup").evaluate_all("els => els.map(e => e.dataset.node)")} == \
        set(refused) and refused
    page.shot("synthesis-tree")

    # a QA candidate links to its path, which is then drawn in focus
    first_qa = page.tab.locator("article.qa").first
    qa_path = first_qa.locator("a.qa-path")
    path_id = int(qa_path.inner_text().split()[-1])
    qa_path.click()
    page.tab.wait_for_url(f"**path={path_id}**")
    focus = {int(x) for x in page.tab.locator("#tree-svg a.node.focus").evaluate_all(
        "els => els.map(e => e.dataset.node)")}
    wanted = next(ids for pid, ids, _ in paths if pid == path_id)
    assert focus == set(wanted) | {i for i, k in nodes.items() if k == "root"}
    assert "FAILED" in page.tab.inner_text("article.qa.qa-rejected >> nth=0 >> table.checks")
    # a node's tool call links to its audit row
    page.tab.locator("article.node-card a.audit-link").first.click()
    page.tab.wait_for_url("**/audit/**")
    assert "synthesis" in page.tab.inner_text("p.made-by")


def test_tools_page_per_tool_stats_histogram_and_slowest_calls(page, built):
    page.goto("/tools")
    rows = {r.split("\t")[0]: r for r in page.tab.locator("#tool-table tbody tr").all_inner_texts()}
    assert {"diag:echo", "bash:run", "rag:search"} <= set(rows)
    assert "0.0%" not in rows["diag:echo"]  # its failed calls count
    assert page.tab.locator("#tool-table svg.spark").count() == len(rows)
    page.tab.click("#tool-table a.tool-link >> text=diag:echo")
    page.tab.wait_for_url("**action=diag**")
    assert page.tab.locator("svg.chart rect.bar").count() == 16
    slowest = page.tab.locator("#slowest tbody tr")
    assert slowest.count() >= 5 and set(_column(page, "slowest", 2)) == {"diag:echo"}
    page.shot("tools")
    page.tab.select_option("#tool-filters select[name=run]", built.rollout_b)
    page.tab.click("#tool-filters button")
    page.tab.wait_for_url(f"**run={built.rollout_b}**")
    assert set(_column(page, "tool-table", 1)) == {"bash:run", "diag:echo"}
    page.tab.locator("#slowest a.audit-link").first.click()
    page.tab.wait_for_url("**/audit/**")
    assert built.rollout_b in page.tab.inner_text("p.made-by")
    page.goto("/tools?since=2000-01-01&until=2000-01-02")
    assert "no audited tool calls" in page.tab.inner_text("#tool-table")


def test_sql_page_runs_examples_and_refuses_writes(page, built):
    page.goto("/sql")
    examples = page.tab.locator("#examples a.example")
    assert examples.count() >= 6
    page.tab.click("#examples a.example >> text=tool calls per tool (the README's query)")
    page.tab.wait_for_url("**q=SELECT**")
    assert "diag:echo" in page.tab.inner_text("#sql-result")
    page.tab.fill("#sql-form textarea", "SELECT id, status FROM rollout_runs ORDER BY id")
    page.tab.click("#sql-form button")  # the form posts; the result links the query's own URL
    assert built.rollout_a in page.tab.inner_text("#sql-result")
    page.shot("sql")
    page.tab.click("#sql-link")
    page.tab.wait_for_url("**/sql?q=SELECT**")
    assert built.rollout_a in page.tab.inner_text("#sql-result")
    for q in ("DELETE FROM rollout_runs", "UPDATE rollout_runs SET status = 'x'", "DROP TABLE tool_calls",
              "INSERT INTO nodes(node_id, url) VALUES ('x', 'y')", "ATTACH DATABASE '/tmp/x.db' AS x",
              "PRAGMA user_version = 7", "SELECT 1; DELETE FROM tool_calls"):
        page.tab.fill("#sql-form textarea", q)
        page.tab.click("#sql-form button")
        assert page.tab.inner_text("#sql-error").startswith("Refused"), q
    page.goto("/sql?q=SELECT+nope+FROM+nowhere")
    assert "no such table" in page.tab.inner_text("#sql-error")
    page.allow_http_errors()  # Chromium logs each 400 answer above as a failed load


def test_error_pages(page, built):
    for path, status, text in (
            ("/rollout/no-such-run", 404, "no rollout run 'no-such-run'"),
            ("/synthesis/no-such-run", 404, "no synthesis run"),
            (f"/rollout/{built.rollout_a}/tasks/no-such-task", 404, "no finished attempt of task"),
            (f"/rollout/{built.rollout_a}/attempts/999999", 404, "has no attempt 999999"),
            (f"/synthesis/{built.synthesis}/seeds/99", 404, "has no seed 99"),
            ("/audit/999999", 404, "no audit row 999999"),
            ("/no/such/page", 404, "Not Found"),
            (f"/rollout/{built.rollout_a}?page=abc", 400, "page must be a whole number"),
            (f"/rollout/{built.rollout_a}?page=0", 400, "page must be at least 1"),
            (f"/rollout/{built.rollout_a}?page=99", 400, "past the last page"),
            (f"/rollout/{built.rollout_a}?sort=nope", 400, "unknown sort key 'nope'"),
            (f"/rollout/{built.rollout_a}?dir=up", 400, "dir must be asc or desc"),
            (f"/rollout/{built.rollout_a}?per=7", 400, "per must be one of"),
            (f"/rollout/{built.rollout_a}?outcome=meh", 400, "unknown outcome filter"),
            ("/runs?status=meh", 400, "unknown status"),
            ("/tools?since=yesterday", 400, "since must be a date"),
            ("/tools?run=nope", 404, "no rollout or synthesis run"),
            (f"/compare?a={built.rollout_a}&b={built.demo_rollout}", 400, "compare two runs of one benchmark"),
            ("/sql?q=SELEC+1", 400, "starts with 'SELEC'"),
            ("/sql?q=SELECT+1+FROM+WHERE", 400, "syntax error")):
        response = page.goto(path)
        assert response.status == status, path
        assert text in page.tab.inner_text("main"), (path, page.tab.inner_text("main"))
    page.shot("error")
    page.allow_http_errors()  # Chromium logs each 4xx page load as a console error
