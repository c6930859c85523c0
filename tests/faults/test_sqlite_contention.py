"""sqlite under 64 concurrent writers against 4 worker processes: no "database is
locked" (nor any other error) reaches a client, and every call is audited."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text

CLIENTS = 64
ROUNDS = 3


@pytest.mark.slow
def test_64_writers_never_see_a_locked_database(server_factory):
    srv = server_factory(workers=4, threads=16)
    prefix = f"lock_{uuid.uuid4().hex[:6]}"

    def client(n: int) -> list[str]:
        problems = []
        http = requests.Session()
        w = f"{prefix}_{n}"

        def post(path, body):
            r = http.post(srv.url + path, json=body, timeout=120)
            out = r.json()
            if r.status_code != 200 or out["code"] != 0 or "locked" in r.text:
                problems.append(f"{path}: {r.status_code} {out['code']} {out['message']}")
            return out

        for i in range(ROUNDS):
            post("/session/create", {"worker_id": w, "resource_type": "bash"})
            post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": f"echo {i}"}})
            post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": i}})
            post("/session/destroy", {"worker_id": w, "resource_type": "bash"})
        return problems

    with ThreadPoolExecutor(CLIENTS) as pool:
        problems = [p for ps in pool.map(client, range(CLIENTS)) for p in ps]
    assert not problems, problems[:5]
    with create_engine(srv.db_url).connect() as conn:
        audited = conn.execute(text("select count(*), sum(code != 0) from tool_calls where worker_id like :p"),
                               {"p": f"{prefix}_%"}).one()
        sessions = conn.execute(text("select status, count(*) from sessions where worker_id like :p "
                                     "group by status"), {"p": f"{prefix}_%"}).all()
    assert audited[0] == CLIENTS * ROUNDS * 2 and not audited[1]
    assert dict(sessions) == {"destroyed": CLIENTS * ROUNDS}
    assert "database is locked" not in srv.log_text()
