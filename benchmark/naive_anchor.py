"""The naive anchor the server is measured against (issue 14): Flask under gunicorn,
one SQLAlchemy Core INSERT per request, nothing else — no validation, no idempotency,
no group commit. ``gunicorn -w 2 --threads 8 -k gthread benchmark.naive_anchor:app``
with ``ANCHOR_DB`` naming the sqlite file."""
from __future__ import annotations

import json
import os
import time

from flask import Flask, request
from sqlalchemy.exc import OperationalError
from sqlalchemy import JSON, Column, Float, Integer, MetaData, String, Table, create_engine, event, insert

engine = create_engine(f"sqlite:///{os.environ.get('ANCHOR_DB', 'anchor.db')}", connect_args={"timeout": 30})


@event.listens_for(engine, "connect")
def _wal(conn, _record) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


calls = Table("calls", MetaData(), Column("id", Integer, primary_key=True), Column("worker_id", String(128)),
              Column("action", String(128)), Column("params", JSON), Column("at", Float))
try:
    calls.metadata.create_all(engine)
except OperationalError:  # the other worker created it first
    pass
app = Flask(__name__)


@app.post("/execute")
def execute():
    body = request.get_json(force=True)
    with engine.begin() as conn:
        conn.execute(insert(calls).values(worker_id=body.get("worker_id"), action=body.get("action"),
                                          params=body.get("params"), at=time.time()))
    return app.response_class(json.dumps({"code": 0, "message": "success", "data": {}}), mimetype="application/json")
