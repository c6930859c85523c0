"""POST /execute's fast path (agentflow/server/fastpath.py) answers as the Flask view
would, and hands Flask every request it does not handle, body intact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import requests
from sqlalchemy import create_engine, text

from tests.support.server import REPO, free_port


def wid() -> str:
    return f"f_{uuid.uuid4().hex[:8]}"


def audit_rows(srv, worker_id: str) -> list[dict]:
    with create_engine(srv.db_url).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "select request_id, action, code, result from tool_calls where worker_id = :w order by id"),
            {"w": worker_id})]


def stable(body: dict) -> dict:
    """An envelope without what differs between two calls (ids, timing)."""
    meta = {k: v for k, v in body["meta"].items() if k not in ("request_id", "trace_id", "execution_time_ms")}
    return {**body, "meta": meta}


def test_a_request_handed_to_flask_gets_the_same_answer(server):
    """An Origin header (the server's own, so allowed) sends the call through Flask."""
    body = {"worker_id": wid(), "action": "diag:echo", "params": {"value": {"k": ["é", 1]}}}
    fast = server.post("/execute", body)
    via_flask = server.post("/execute", body, headers={"Origin": server.url})
    assert fast.status_code == via_flask.status_code == 200
    assert fast.headers["Content-Type"] == via_flask.headers["Content-Type"] == "application/json"
    assert stable(fast.json()) == stable(via_flask.json())
    assert fast.json()["data"] == {"value": {"k": ["é", 1]}}
    rows = audit_rows(server, body["worker_id"])
    assert [r["code"] for r in rows] == [0, 0] and rows[0]["result"] == rows[1]["result"]


def test_tool_errors_and_parameter_errors_have_the_same_status_both_ways(server):
    for params in ({"value": 1, "bogus": 2}, {}):
        body = {"worker_id": wid(), "action": "diag:echo", "params": params}
        fast = server.post("/execute", body)
        via_flask = server.post("/execute", body, headers={"Origin": server.url})
        assert fast.status_code == via_flask.status_code
        assert stable(fast.json()) == stable(via_flask.json())


def test_a_refused_body_reaches_flask_intact(server):
    """Bodies the fast path does not accept are refused by Flask, worded as always."""
    w = wid()
    r = server.post("/execute", {"worker_id": w, "action": "diag:noop", "extra": 1})
    assert r.status_code == 400 and r.json()["code"] == 1000 and "extra" in r.json()["message"]
    r = requests.post(server.url + "/execute", data=b'{"worker_id": "' + w.encode() + b'", "action": "diag:noop"',
                      headers={**server.headers(), "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    # a body Flask reads again after the fast path read it: the call runs with it
    r = requests.post(server.url + "/execute", data=json.dumps({"worker_id": w, "action": "diag:echo",
                                                                "params": {"value": "x" * 5000}}),
                      headers={**server.headers(), "Content-Type": "application/json", "Origin": server.url},
                      timeout=30)
    assert r.status_code == 200 and r.json()["data"] == {"value": "x" * 5000}


def test_a_retry_is_replayed_and_audited_once(server):
    w, rid = wid(), uuid.uuid4().hex
    body = {"worker_id": w, "action": "diag:echo", "params": {"value": 7}}
    first = server.post("/execute", body, headers={"X-Request-ID": rid})
    again = server.post("/execute", body, headers={"X-Request-ID": rid})
    via_flask = server.post("/execute", body, headers={"X-Request-ID": rid, "Origin": server.url})
    assert first.json()["data"] == again.json()["data"] == via_flask.json()["data"] == {"value": 7}
    assert "replayed" not in first.json()["meta"]
    assert again.json()["meta"]["replayed"] is True and via_flask.json()["meta"]["replayed"] is True
    assert [r["request_id"] for r in audit_rows(server, w)] == [rid]


def test_an_id_reused_for_another_body_is_refused(server):
    w, rid = wid(), uuid.uuid4().hex
    server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": 1}},
                headers={"X-Request-ID": rid})
    r = server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": 2}},
                    headers={"X-Request-ID": rid})
    assert r.status_code == 400 and r.json()["code"] == 1000
    assert "another body" in r.json()["message"] and r.json()["meta"]["request_id"] == rid
    assert len(audit_rows(server, w)) == 1


def test_a_bad_request_id_host_or_content_type_is_refused_as_before(server):
    body = json.dumps({"worker_id": wid(), "action": "diag:noop"})
    cases = [({"X-Request-ID": "bad id!"}, 400), ({"Host": "evil.example"}, 421),
             ({"Content-Type": "text/plain"}, 415)]
    for headers, status in cases:
        r = requests.post(server.url + "/execute", data=body, timeout=30,
                          headers={**server.headers(), "Content-Type": "application/json", **headers})
        assert r.status_code == status, (headers, r.text)
        assert r.json()["code"] == 1000


def _start_anchor(tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "2", "-k", "gthread",
                             "-b", f"127.0.0.1:{port}", "--log-level", "warning", "benchmark.naive_anchor:app"],
                            cwd=REPO, env={**os.environ, "ANCHOR_DB": str(tmp_path / "anchor.db")},
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.post(url + "/execute", json={"worker_id": "w", "action": "a"}, timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the anchor did not start")


def test_bench_prints_ratios_against_an_anchor(server, tmp_path):
    anchor, anchor_url = _start_anchor(tmp_path)
    try:
        out = subprocess.run([sys.executable, "-m", "agentflow.cli", "bench", "--url", server.url,
                              "--server-pid", str(server.proc.pid), "--anchor-url", anchor_url,
                              "--anchor-pid", str(anchor.pid), "-c", "1", "2", "-n", "40", "--json",
                              *(["--token", server.token] if server.token else [])],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        os.killpg(anchor.pid, signal.SIGTERM)
        anchor.wait(30)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"anchor", "ours", "ratios"}
    for clients in ("1", "2"):
        assert report["ours"][clients]["codes"] == {"0": 40} and report["anchor"][clients]["calls"] == 40
        ratio = report["ratios"][clients]
        assert ratio["cpu"] > 0 and ratio["p99"] > 0 and ratio["req_s"] > 0
        assert ratio["cpu"] == round(report["ours"][clients]["server_cpu_ms_per_call"]
                                     / report["anchor"][clients]["server_cpu_ms_per_call"], 2)


def test_bench_anchor_pid_without_url_is_refused():
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "bench", "--anchor-pid", "1"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode != 0 and "--anchor-pid needs --anchor-url" in out.stderr


def test_plain_bodies_load_as_the_schema_loads_them():
    """ExecuteBody.load_plain (the fast path's loader) never accepts what the schema
    refuses, and gives what the schema gives for what it accepts."""
    import itertools

    from marshmallow import ValidationError

    from agentflow.server.schemas import ExecuteBody

    schema = ExecuteBody()
    worker_ids = ["w", "w.1:x@y-z", "", "a" * 128, "a" * 129, "bad id", "-lead", 7, None]
    actions = ["diag:noop", "", "x" * 200, "x" * 201, 3, None]
    params = [{}, {"a": [1, {"b": None}]}, [], "p", None, "absent"]
    trace_ids = [None, "t", "t" * 200, "t" * 201, 5, "absent"]
    accepted = 0
    for w, a, p, t in itertools.product(worker_ids, actions, params, trace_ids):
        body = {"worker_id": w, "action": a, **({} if p == "absent" else {"params": p}),
                **({} if t == "absent" else {"trace_id": t})}
        plain = ExecuteBody.load_plain(body)
        try:
            expected = schema.load(body)
        except ValidationError:
            assert plain is None, body
            continue
        if plain is not None:
            accepted += 1
            assert plain == expected, body
    assert accepted > 50
    for extra in ({"timeout": 5}, {"unknown": 1}):
        assert ExecuteBody.load_plain({"worker_id": "w", "action": "a", **extra}) is None
