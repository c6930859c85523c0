"""Hostile request bodies and headers: each is refused with a clear 1xxx code (never a
5000), the server stays healthy, and nothing half-runs.

Complements tests/server/test_robustness.py (fork bomb, memory hog, output flood,
infinite loop, body limit on /execute, token) and the tool tests (SQL writes, path
escapes of single tools)."""
from __future__ import annotations

import json
import uuid

import pytest
import requests


def wid() -> str:
    return f"h_{uuid.uuid4().hex[:8]}"


def raw_post(server, path, data: bytes | str, headers=None):
    return requests.post(server.url + path, data=data, timeout=30,
                         headers={"Content-Type": "application/json", **server.headers(), **(headers or {})})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path, template", [
    ("/execute", '{"worker_id": "w", "action": "diag:echo", "params": {"value": %s}}'),
    ("/execute/batch", '{"worker_id": "w", "actions": [{"action": "diag:echo", "params": {"value": %s}}]}'),
    ("/session/create", '{"worker_id": "w", "resource_type": "bash", "config": {"x": %s}}'),
])
@pytest.mark.parametrize("depth", [70, 900, 200_000])
def test_deep_json_is_1000(server, path, template, depth):
    r = raw_post(server, path, template % nested(depth))
    body = r.json()
    assert r.status_code == 400 and body["code"] == 1000, body
    assert "deeper than" in body["message"] or "recursion" in body["message"]


def test_moderately_nested_params_still_work(server):
    value = json.loads(nested(40))
    out = server.post("/execute", {"worker_id": wid(), "action": "diag:echo", "params": {"value": value}}).json()
    assert out["code"] == 0 and out["data"]["value"] == value


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_1000(server, literal):
    r = raw_post(server, "/execute", '{"worker_id": "w", "action": "diag:echo", "params": {"value": %s}}' % literal)
    assert r.status_code == 400 and r.json()["code"] == 1000 and literal in r.json()["message"]


@pytest.mark.parametrize("field", ["worker_id", "action", "value"])
def test_lone_surrogates_are_1000(server, field):
    body = {"worker_id": "w", "action": "diag:echo", "params": {"value": "ok"}}
    if field == "value":
        body["params"]["value"] = "\ud800"
    else:
        body[field] = "x\udfff"
    r = raw_post(server, "/execute", json.dumps(body))  # ensure_ascii: sent as a \\ud800 escape
    assert r.status_code == 400 and r.json()["code"] == 1000 and "surrogate" in r.json()["message"]


def test_escaped_surrogate_pairs_are_fine(server):
    r = raw_post(server, "/execute", json.dumps({"worker_id": wid(), "action": "diag:echo",
                                                 "params": {"value": "emoji 😀 ü"}}))
    assert r.json()["code"] == 0 and r.json()["data"]["value"] == "emoji 😀 ü"


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe{", b"{", b"[]", b"null", b"1e999999",
                                  b'{"worker_id": 1, "action": []}', b'{"worker_id": "w", "action": "diag:noop", "x": 1}'])
def test_garbage_bodies_are_1000(server, data):
    r = raw_post(server, "/execute", data)
    assert r.status_code == 400 and r.json()["code"] == 1000, r.text


@pytest.mark.parametrize("body", [
    {"worker_id": "w", "actions": [{"action": "diag:noop"}], "stop_on_error": 0},
    {"worker_id": "w", "actions": [{"action": "diag:noop"}], "parallel": "yes"},
    {"worker_id": "w", "action": "diag:noop", "timeout": "5"},
    {"worker_id": "w", "action": "diag:noop", "timeout": 0},
])
def test_values_outside_the_documented_types_are_1000(server, body):
    path = "/execute/batch" if "actions" in body else "/execute"
    r = server.post(path, body)
    assert r.status_code == 400 and r.json()["code"] == 1000, r.text


def test_reused_request_id_is_refused_for_another_request(server):
    rid, w = uuid.uuid4().hex, wid()
    first = server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": 1}},
                        headers={"X-Request-ID": rid}).json()
    retry = server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": 1}},
                        headers={"X-Request-ID": rid}).json()
    assert first["code"] == 0 and retry["meta"]["replayed"] is True
    other_body = server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": 2}},
                             headers={"X-Request-ID": rid})
    assert other_body.status_code == 400 and "another body" in other_body.json()["message"]
    other_endpoint = server.post("/session/list", {"worker_id": w}, headers={"X-Request-ID": rid})
    assert other_endpoint.status_code == 400 and "POST /execute" in other_endpoint.json()["message"]


def test_undeclared_method_is_405_with_allow(server):
    r = requests.request("TRACE", server.url + "/execute", timeout=10)
    assert r.status_code == 405 and r.json()["code"] == 1000 and "POST" in r.headers["Allow"]


def test_oversize_bodies_on_every_endpoint(server_factory):
    srv = server_factory({"server": {"max_request_bytes": 4096}})
    big = "x" * 10_000
    for path, body in (("/execute/batch", {"worker_id": "w", "actions": [{"action": "diag:echo",
                                                                           "params": {"value": big}}]}),
                       ("/session/create", {"worker_id": "w", "resource_type": "bash", "config": {"x": big}}),
                       ("/warmup", {"backends": [big]})):
        r = srv.post(path, body)
        assert r.status_code == 413 and r.json()["code"] == 1000 and "4096" in r.json()["message"], (path, r.text)

    def chunks():  # no Content-Length: the limit must hold for a streamed body too
        yield b'{"worker_id": "w", "action": "diag:echo", "params": {"value": "'
        for _ in range(20):
            yield b"y" * 1000
        yield b'"}}'

    r = requests.post(srv.url + "/execute", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code in (400, 413) and r.json()["code"] == 1000, r.text
    assert srv.get("/health").status_code == 200
    from sqlalchemy import create_engine, text
    with create_engine(srv.db_url).connect() as conn:
        assert conn.execute(text("select count(*) from tool_calls")).scalar() == 0  # nothing ran


def test_huge_header_and_request_id(server):
    rid = "r" * 5000  # refused, never cut to a prefix that another id could share
    r = server.post("/execute", {"worker_id": wid(), "action": "diag:noop"}, headers={"X-Request-ID": rid})
    assert r.status_code == 400 and r.json()["code"] == 1000 and "X-Request-ID" in r.json()["message"]
    assert r.json()["meta"]["request_id"] != rid
    r = requests.post(server.url + "/execute", json={}, headers={"X-Junk": "j" * 20_000}, timeout=30)
    assert r.status_code in (400, 431)  # gunicorn's header limit, before the app
    assert server.get("/health").status_code == 200
