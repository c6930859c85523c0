"""The DB-API row path stores exactly what SQLAlchemy's own insert stores."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert, select, text

from agentflow.db.rows import RowWriter

VALUES = [dt.datetime(2026, 12, 1, 22, 4, 39, 123456), dt.datetime(2026, 12, 1, 22, 4, 39),
          dt.datetime(999, 1, 1), dt.datetime.max, dt.datetime.min,
          dt.datetime(2026, 12, 1, 22, 4, 39, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), None]


@pytest.fixture()
def table(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    rows = Table("rows", MetaData(), Column("id", Integer, primary_key=True), Column("path", String(8)),
                 Column("at", DateTime))
    rows.metadata.create_all(engine)
    yield engine, rows
    engine.dispose()


def test_datetimes_are_stored_as_sqlalchemy_stores_them(table):
    engine, rows = table
    writer = RowWriter(engine)
    keys = ("id", "path", "at")
    compiled = writer.compiled(rows, keys)
    assert compiled is not None
    writer.run([(compiled, [{"id": i, "path": "rows", "at": v} for i, v in enumerate(VALUES)])])
    writer.close()
    with engine.begin() as conn:
        conn.execute(insert(rows), [{"id": 100 + i, "path": "core", "at": v} for i, v in enumerate(VALUES)])
    with engine.connect() as conn:
        stored = dict(conn.execute(text("select id, at from rows")).all())
        loaded = dict(conn.execute(select(rows.c.id, rows.c.at)).all())
    for i, value in enumerate(VALUES):
        assert stored[i] == stored[100 + i], value  # the same text in the file
        assert loaded[i] == loaded[100 + i]
    assert loaded[0] == VALUES[0]


def test_a_compiled_select_reads_rows_as_sqlalchemy_reads_them(tmp_path):
    from sqlalchemy import JSON, Boolean, bindparam

    from agentflow.db.rows import CompiledSelect

    engine = create_engine(f"sqlite:///{tmp_path / 'select.db'}")
    things = Table("things", MetaData(), Column("id", Integer, primary_key=True), Column("owner", String(8)),
                   Column("data", JSON), Column("flag", Boolean), Column("at", DateTime))
    things.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(things), [
            {"id": 1, "owner": "a", "data": {"k": [1, "x"]}, "flag": True, "at": VALUES[0]},
            {"id": 2, "owner": "a", "data": None, "flag": False, "at": VALUES[1]},
            {"id": 3, "owner": "b", "data": [], "flag": None, "at": None}])
    newest = select(things).where(things.c.owner == bindparam("who")).order_by(things.c.id.desc()).limit(1)
    fast = CompiledSelect(newest, engine)
    for who in ("a", "b", "nobody"):
        with engine.connect() as conn:
            expected = conn.execute(newest, {"who": who}).first()
        got = fast.first(engine, {"who": who})
        assert got == (dict(expected._mapping) if expected is not None else None)
    assert fast.first(engine, {"who": "a"})["data"] is None and fast.first(engine, {"who": "b"})["data"] == []
    engine.dispose()
