"""The viewer over a generated run of 10,000 tasks × 4 samples: the task table sorts,
filters and pages in SQL, and the other pages open (their server times are printed,
not asserted; ``tests/view/measure.py`` reports them). A running run's progress updates
on the page by itself."""
from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
from contextlib import closing

import pytest

from .bigrun import BIG_A, BIG_B

pytestmark = pytest.mark.timeout(180)


def _server_ms(response) -> float:
    timing = response.headers.get("server-timing", "app;dur=nan")
    return float(timing.split("dur=")[1])


def test_ten_thousand_tasks_sort_filter_and_page(big_page, big):
    times = {}
    r = big_page.goto(f"/rollout/{BIG_A}")
    times["run page"] = _server_ms(r)
    assert "10000 tasks × 4" in big_page.tab.text_content("main")
    assert big_page.tab.locator("#task-table tbody tr").count() == 50
    assert "page 1 of 200" in big_page.tab.inner_text(".pager")
    assert big_page.tab.locator("#task-table tbody tr").first.locator("a.sample").count() == 4
    big_page.tab.click('#task-table a.sort[data-sort="score"]')
    big_page.tab.wait_for_url("**sort=score**")
    scores = [float(s) for s in big_page.tab.locator("#task-table tbody td.score").all_inner_texts()]
    assert scores == sorted(scores)
    big_page.tab.fill(".pager form.jump input[name=page]", "150")
    big_page.tab.press(".pager form.jump input[name=page]", "Enter")
    big_page.tab.wait_for_url("**page=150**")
    assert "page 150 of 200" in big_page.tab.inner_text(".pager")
    assert "sort=score" in big_page.tab.url  # paging keeps the sort
    r = big_page.goto(f"/rollout/{BIG_A}?outcome=infra_error&sort=tokens&dir=desc")
    times["filtered"] = _server_ms(r)
    rows = big_page.tab.locator("#task-table tbody tr")
    assert rows.count() == 50 and all("infra_error" in t for t in rows.all_inner_texts())
    r = big_page.goto(f"/rollout/{BIG_A}?q=task-09999")
    times["search"] = _server_ms(r)
    assert big_page.tab.locator("#task-table tbody tr").count() == 1
    for name, path in (("task", f"/rollout/{BIG_A}/tasks/task-04242"), ("compare", f"/compare?a={BIG_A}&b={BIG_B}"),
                       ("tools", f"/tools?run={BIG_A}"), ("runs", "/runs"), ("sql", "/sql")):
        times[name] = _server_ms(big_page.goto(path))
    print("\nserver time per page on 10,000 tasks x 4 samples (ms):",
          ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


def test_a_running_run_updates_its_progress_by_itself(big_page, big):
    url, _ = big
    path = url.split("///", 1)[1]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def add_attempts(db, first: int, count: int) -> None:
        db.executemany(
            "INSERT INTO rollout_attempts (run_id, task_id, sample_index, attempt, status, question, task_metadata, "
            "score, scored, score_details, turns, tool_call_count, prompt_tokens, completion_tokens, total_tokens, "
            "trace_id, worker_id, started_at, finished_at, duration_ms, model_ms, tool_ms) VALUES "
            "('live', ?, 0, 1, 'completed', 'q', '{}', 1.0, 1, '{}', 1, 0, 10, 5, 15, ?, 'w', ?, ?, 100, 50, 0)",
            [(f"t{i}", f"tr-live-{i}", now, now) for i in range(first, first + count)])
        db.commit()

    with closing(sqlite3.connect(path, timeout=30)) as db:  # the test writes, the viewer only reads
        db.execute("INSERT INTO rollout_runs (id, benchmark_name, status, model_name, data_path, fingerprint, "
                   "fingerprint_version, spec, total_tasks, heartbeat_at, pid, host, created_at, updated_at) VALUES "
                   "('live', 'live-bench', 'running', 'm', '', 'f', 1, '{\"config\": {\"n_samples\": 1}}', 6, ?, ?, "
                   "?, ?, ?)", (now, os.getpid(), socket.gethostname(), now, now))
        add_attempts(db, 0, 2)
        big_page.goto("/runs")
        row = big_page.tab.locator('tr[data-run="live"]')
        assert "running" in row.inner_text() and "2/6" in row.inner_text()
        add_attempts(db, 2, 2)
        big_page.tab.wait_for_function(
            "() => document.querySelector('tr[data-run=\"live\"] [data-field=done]').textContent === '4'",
            timeout=10_000)
        big_page.goto("/rollout/live")
        assert "4/6" in big_page.tab.inner_text(".run-head")
        add_attempts(db, 4, 2)
        db.execute("UPDATE rollout_runs SET status = 'success', finished_at = ? WHERE id = 'live'", (now,))
        db.commit()
        # the run page sees it finish and reloads itself to show the final state
        big_page.tab.wait_for_function(
            "() => document.querySelector('.run-head .badge').textContent === 'success'", timeout=10_000)
        t0 = time.monotonic()
        while "6/6" not in big_page.tab.inner_text(".run-head") and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        assert "6/6" in big_page.tab.inner_text(".run-head")
