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
