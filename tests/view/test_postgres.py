"""The viewer on PostgreSQL: pages read a run there, every connection is read-only at
the server (``default_transaction_read_only``), and the SQL page's time limit is the
server's ``statement_timeout``. Skips, saying why, without PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from agentflow.view.db import make_readonly_engine

from . import bigrun
from .conftest import Viewer

pytestmark = pytest.mark.timeout(120)

_TABLES = ("rollout_runs", "rollout_attempts", "rollout_messages", "rollout_tool_calls", "tool_calls", "nodes")


def _counts(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in _TABLES}
    finally:
        engine.dispose()


def test_viewer_reads_postgresql_and_cannot_write_there(postgres_url, tmp_path):
    url = bigrun.build(postgres_url, tasks=60, samples=2)
    before = _counts(url)
    engine = make_readonly_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
            with pytest.raises(Exception, match="read-only transaction"):
                conn.execute(text("INSERT INTO nodes (node_id, url) VALUES ('x', 'y')"))
    finally:
        engine.dispose()

    viewer = Viewer(url, tmp_path / "view.log", "--sql-time-limit", "1")
    try:
        for path in ("/runs", f"/rollout/{bigrun.BIG_A}", f"/rollout/{bigrun.BIG_A}?sort=score&dir=desc&page=3&per=25",
                     f"/rollout/{bigrun.BIG_A}?outcome=fail&q=task-0001", f"/rollout/{bigrun.BIG_A}/tasks/task-00001",
                     f"/compare?a={bigrun.BIG_A}&b={bigrun.BIG_B}", f"/tools?run={bigrun.BIG_A}", "/sql",
                     f"/rollout/{bigrun.BIG_A}/attempts/1"):
            assert viewer.get(path).status_code == 200, path
        assert "page 1 of 2" in viewer.get(f"/rollout/{bigrun.BIG_A}").text
        r = viewer.get("/sql", params={"q": "SHOW transaction_read_only"})
        assert r.status_code == 200 and "<td>on</td>" in r.text
        for q in ("DELETE FROM tool_calls", "SET default_transaction_read_only = off",
                  "WITH gone AS (DELETE FROM tool_calls RETURNING id) SELECT count(*) FROM gone",
                  "SELECT 1; DELETE FROM nodes"):
            r = viewer.get("/sql", params={"q": q})
            assert r.status_code == 400 and "Refused" in r.text, q
        r = viewer.get("/sql", params={"q": "SELECT pg_sleep(5)"})
        assert r.status_code == 400 and "time limit of 1 s" in r.text
        assert viewer.get("/sql", params={"q": "SELECT count(*) FROM rollout_attempts"}).status_code == 200
    finally:
        viewer.stop()
    assert _counts(url) == before
