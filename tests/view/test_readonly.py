"""The viewer never writes: its connections are read-only at the database, the SQL page
refuses writes, ATTACH, PRAGMA changes and more than one statement, and a session that
tried to flush would fail. After every page is read, the database file is unchanged."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from agentflow.db.engine import DatabaseError
from agentflow.view import create_app
from agentflow.view import db as view_db
from agentflow.view.db import ReadOnlyViolation, make_readonly_engine
from agentflow.view.sql import QueryError, QueryRefused, check_statement, run_query

from .conftest import file_digest

WRITES = ["INSERT INTO nodes(node_id, url) VALUES ('x', 'y')", "UPDATE rollout_runs SET status = 'x'",
          "DELETE FROM tool_calls", "DROP TABLE tool_calls", "CREATE TABLE t(a)", "ALTER TABLE nodes ADD c INT",
          "REPLACE INTO nodes(node_id, url) VALUES ('x', 'y')", "ATTACH DATABASE ':memory:' AS m", "DETACH m",
          "PRAGMA user_version = 7", "PRAGMA journal_mode = DELETE", "VACUUM", "REINDEX", "BEGIN",
          "SELECT 1; DELETE FROM tool_calls", "SELECT 1;; SELECT 2", "  ", "-- only a comment"]


@pytest.mark.parametrize("sql", WRITES)
def test_the_statement_check_refuses_what_does_not_read(sql):
    with pytest.raises(QueryRefused):
        check_statement(sql)


@pytest.mark.parametrize("sql, kept", [
    ("SELECT 1;", "SELECT 1"), ("select ';' as semi ; ", "select ';' as semi"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", None), ("-- note\nSELECT 1 /* ; */", None),
    ("PRAGMA table_info(tool_calls)", None), ('SELECT "a;b" FROM (SELECT 1 AS "a;b")', None),
    ("EXPLAIN QUERY PLAN SELECT * FROM tool_calls", None), ("VALUES (1), (2)", None)])
def test_the_statement_check_accepts_one_reading_statement(sql, kept):
    assert check_statement(sql) == (kept or sql)


@pytest.fixture
def engine(built):
    e = make_readonly_engine(built.url)
    yield e
    e.dispose()


def test_the_database_refuses_writes_even_past_the_check(engine, built, tmp_path):
    """The connection itself is read-only: statements the check would refuse fail at
    SQLite when sent straight through the viewer's engine."""
    for sql in ("INSERT INTO nodes(node_id, url) VALUES ('x', 'y')", "DELETE FROM tool_calls",
                "CREATE TEMP TABLE t(a)", "PRAGMA user_version = 7", "PRAGMA query_only = 0",
                f"ATTACH DATABASE '{tmp_path / 'new.db'}' AS x"):
        with engine.connect() as conn, pytest.raises(Exception, match="not authorized|readonly|too many attached"):
            conn.execute(text(sql))
    assert not (tmp_path / "new.db").exists()  # ATTACH would have created it
    with engine.connect() as conn:  # reading pragmas is allowed
        assert conn.execute(text("PRAGMA table_info(tool_calls)")).fetchall()
        assert conn.execute(text("PRAGMA query_only")).scalar() == 1


def test_run_query_caps_rows_cuts_long_values_and_stops_slow_queries(engine):
    r = run_query(engine, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) "
                          "SELECT i, printf('%.3000c', 'x') AS wide FROM n", max_rows=1000)
    assert len(r.rows) == 1000 and r.truncated and r.columns == ["i", "wide"] and r.cut_cells == 1000
    assert len(r.rows[0][1]) == 2001
    t0 = time.monotonic()
    with pytest.raises(QueryError, match="time limit of 0.5 s"):
        run_query(engine, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                  time_limit_s=0.5)
    assert time.monotonic() - t0 < 3
    with pytest.raises(QueryError, match="no such table"):
        run_query(engine, "SELECT * FROM nowhere")
    assert run_query(engine, "SELECT 1 AS one").rows == [[1]]  # the connection is fine afterwards


def test_a_missing_database_is_never_created(tmp_path):
    with pytest.raises(DatabaseError, match="no sqlite database"):
        make_readonly_engine(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()
    with pytest.raises(DatabaseError, match="sqlite or PostgreSQL"):
        make_readonly_engine("mysql://u@h/db")


def test_the_session_refuses_to_flush(built):
    from agentflow.db.models import Node

    app = create_app({"DATABASE_URL": built.url})
    with app.app_context():
        session = view_db.get_session()
        session.add(Node(node_id="x", url="http://x"))
        with pytest.raises(ReadOnlyViolation):
            session.flush()


def _every_page(built) -> list[str]:
    with sqlite3.connect(f"file:{built.home / 'agentflow.db'}?mode=ro", uri=True) as db:
        attempts = [r[0] for r in db.execute("SELECT id FROM rollout_attempts WHERE run_id = ?", (built.rollout_a,))]
        audit = [r[0] for r in db.execute("SELECT id FROM tool_calls")]
    a, b, s = built.rollout_a, built.rollout_b, built.synthesis
    pages = ["/", "/runs", "/runs?kind=rollout&status=success&q=view", f"/runs/{a}", f"/rollout/{a}",
             f"/rollout/{a}?sort=score&dir=desc&outcome=fail", f"/rollout/{b}", f"/rollout/{built.demo_rollout}",
             f"/compare?a={a}&b={b}", f"/compare?a={a}&b={b}&task=say-0", "/compare", f"/synthesis/{s}",
             f"/synthesis/{s}/seeds/0", f"/synthesis/{s}/seeds/1?path=5", f"/synthesis/{built.demo_synthesis}",
             f"/synthesis/{built.demo_synthesis}/seeds/0", "/tools", f"/tools?run={a}", f"/tools?run={s}",
             "/tools?action=bash:run", "/sql", f"/api/progress?run={a}&run={s}", "/api/health",
             *(f"/rollout/{a}/attempts/{i}" for i in attempts), *(f"/audit/{i}" for i in audit),
             *(f"/rollout/{a}/tasks/{t}" for t in ("say-0", "image", "hostile"))]
    pages += [f"/sql?q={q}" for q in WRITES + ["SELECT * FROM rollout_attempts", "PRAGMA table_info(nodes)"]]
    return pages


def test_reading_every_page_changes_nothing(built, db_digest, viewer, monkeypatch):
    """In-process, every sqlite connection the app opens ends with ``total_changes`` 0;
    and the real viewer process leaves the database file's bytes as they were."""
    opened: list[sqlite3.Connection] = []
    connect = view_db._sqlite_connect

    def recording(path: Path):
        make = connect(path)

        def wrapped():
            conn = make()
            opened.append(conn)
            return conn

        return wrapped

    monkeypatch.setattr(view_db, "_sqlite_connect", recording)
    app = create_app({"DATABASE_URL": built.url})
    client = app.test_client()
    pages = _every_page(built)
    for path in pages:
        status = client.get(path).status_code
        assert status in (200, 302, 400), path
        assert viewer.get(path, allow_redirects=False).status_code == status, path  # and through the real viewer
    assert opened and all(conn.total_changes == 0 for conn in opened)

    db = built.home / "agentflow.db"
    assert file_digest(db) == db_digest["db"]
    wal = Path(f"{db}-wal")
    assert file_digest(wal) == db_digest["wal"] or (db_digest["wal"] is None and wal.stat().st_size == 0)
