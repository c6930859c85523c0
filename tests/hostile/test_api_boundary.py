"""The HTTP boundary as an attacker meets it: names that would steer workspace paths,
browser-style requests (DNS rebinding, cross-origin text/plain POSTs), NUL bytes in
every string parameter, oversize strings and request ids. Each is a clean 4xx, nothing
runs, and every documented limit is the enforced one (one test per number)."""
from __future__ import annotations

import json
import socket
import uuid

import pytest
import requests
from sqlalchemy import create_engine, text

from agentflow.runtime.sessions import MAX_CUSTOM_NAME, MAX_RESOURCE_TYPE, MAX_WORKER_ID
from agentflow.server.envelope import MAX_BODY_DEPTH, MAX_REQUEST_ID, MAX_STRING_BYTES

JSON = {"Content-Type": "application/json"}


def wid() -> str:
    return f"b_{uuid.uuid4().hex[:8]}"


def calls_of(srv, worker_id: str) -> int:
    with create_engine(srv.db_url).connect() as conn:
        return conn.execute(text("select count(*) from tool_calls where worker_id = :w"), {"w": worker_id}).scalar()


def raw(srv, path: str, data, headers: dict | None = None, method: str = "POST") -> requests.Response:
    return requests.request(method, srv.url + path, data=data, timeout=60, headers={**srv.headers(), **(headers or {})})


def assert_refused(r: requests.Response, status: int, code: int, *words: str) -> dict:
    body = r.json()
    assert r.status_code == status and body["code"] == code, (r.status_code, body)
    for word in words:
        assert word in body["message"], body["message"]
    return body


# -- 1. names cannot steer paths ------------------------------------------------------
BAD_NAMES = ["x/../victim", "..", ".", ".hidden", "a/b", "/abs", "a\\b", "a b", "a\tb", "a\nb", "a\rb",
             "\x7f", "é", "-rf", "@x", ":x", "", "a\u2028b"]
ENDPOINTS = [
    ("/execute", lambda w: {"worker_id": w, "action": "bash:run", "params": {"command": "touch pwned"}}),
    ("/execute/batch", lambda w: {"worker_id": w, "actions": [{"action": "bash:run",
                                                               "params": {"command": "touch pwned"}}]}),
    ("/session/create", lambda w: {"worker_id": w, "resource_type": "bash"}),
    ("/session/destroy", lambda w: {"worker_id": w, "resource_type": "bash"}),
    ("/session/list", lambda w: {"worker_id": w}),
    ("/session/refresh", lambda w: {"worker_id": w}),
]


@pytest.mark.parametrize("path, body", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_worker_id_is_refused_everywhere(server, path, body, name):
    r = server.post(path, body(name))
    assert_refused(r, 400, 1000, "worker_id")
    assert calls_of(server, name) == 0


@pytest.mark.parametrize("name", ["x" * (MAX_WORKER_ID + 1), "w\x00", "x/" + "../" * 40 + "tmp"])
def test_long_or_nul_worker_id_is_refused(server, name):
    assert_refused(server.post("/execute", ENDPOINTS[0][1](name)), 400, 1000, "worker_id")


def test_worker_id_cannot_take_over_another_session(server):
    """The attack of issue 12: ``x/../<victim session id>`` pointed the attacker's
    workspace at the victim's, which its destroy then removed."""
    victim = wid()
    sid = server.post("/session/create", {"worker_id": victim, "resource_type": "bash"}).json()["data"]["session_id"]
    assert server.post("/execute", {"worker_id": victim, "action": "bash:run",
                                    "params": {"command": "echo mine > note"}}).json()["code"] == 0
    for attacker in (f"x/../{sid}", f"../{sid}", f"{victim}/..", sid + "/"):
        for path in ("/session/create", "/session/destroy"):
            assert_refused(server.post(path, {"worker_id": attacker, "resource_type": "bash"}), 400, 1000, "worker_id")
        assert_refused(server.post("/execute", {"worker_id": attacker, "action": "bash:run",
                                                "params": {"command": "rm -rf ./*"}}), 400, 1000, "worker_id")
    out = server.post("/execute", {"worker_id": victim, "action": "bash:run", "params": {"command": "cat note"}}).json()
    assert out["code"] == 0 and out["data"]["stdout"] == "mine\n" and out["meta"]["session_id"] == sid
    server.post("/session/destroy", {"worker_id": victim, "resource_type": "bash"})


@pytest.mark.parametrize("name", ["../bash", "bash/..", "bash\x00", ".bash", "ba sh", "x" * (MAX_RESOURCE_TYPE + 1)])
@pytest.mark.parametrize("path", ["/session/create", "/session/destroy", "/session/refresh"])
def test_bad_resource_type_is_refused(server, path, name):
    assert_refused(server.post(path, {"worker_id": wid(), "resource_type": name}), 400, 1000, "resource_type")


@pytest.mark.parametrize("name", ["../../etc", "my shell", "a\x00", ".x", "x" * (MAX_CUSTOM_NAME + 1)])
def test_bad_custom_name_is_refused(server, name):
    r = server.post("/session/create", {"worker_id": wid(), "resource_type": "bash", "custom_name": name})
    assert_refused(r, 400, 1000, "custom_name")


def test_longest_names_work_and_stay_in_the_workspace_root(server):
    w = "w" + "x" * (MAX_WORKER_ID - 1)
    name = "n" * MAX_CUSTOM_NAME
    created = server.post("/session/create", {"worker_id": w, "resource_type": "bash", "custom_name": name}).json()
    assert created["code"] == 0 and created["data"]["session_name"] == name, created
    sid = created["data"]["session_id"]
    workspace = server.workspace_of(sid)
    assert workspace.name == sid and sid.startswith(f"bash_{w}_")
    temp = server.post("/execute", {"worker_id": "t" * MAX_WORKER_ID, "action": "bash:run",
                                    "params": {"command": "true"}}).json()
    assert temp["code"] == 0 and temp["meta"]["temporary_session"], temp
    others = server.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": "pwd"}}).json()
    assert others["code"] == 0
    server.post("/session/destroy", {"worker_id": w, "resource_type": "bash"})


def test_session_ids_are_validated_inside_the_runtime_too(tmp_path):
    """Defence in depth: a caller that skips the HTTP schemas still cannot steer a path."""
    from agentflow.config import ServerConfig
    from agentflow.runtime.cluster import Cluster
    from agentflow.runtime.errors import ParameterError
    from agentflow.runtime.sessions import SessionManager

    manager = SessionManager(None, None, None, tmp_path / "workspaces", 60, Cluster(ServerConfig(), None, None))
    (tmp_path / "workspaces").mkdir()
    for bad in ("../x", "a/b", "..", "a\x00"):
        with pytest.raises(ParameterError):
            manager.workspace_for(bad)
        with pytest.raises(ParameterError, match="worker_id"):
            manager.temporary(bad, "bash")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "workspaces" / "bash_w_001").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ParameterError, match="workspace root"):
        manager.workspace_for("bash_w_001")
    assert manager.workspace_for("bash_w_002") == tmp_path / "workspaces" / "bash_w_002"


# -- 2. no way back from a browser -----------------------------------------------------
@pytest.mark.parametrize("ctype", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", None, "application/jsonx", "text/json"])
def test_non_json_bodies_are_415_and_run_nothing(server, ctype):
    """A web page can POST text/plain or forms to a loopback server without a CORS
    preflight; such bodies are refused before anything runs."""
    w = wid()
    body = json.dumps({"worker_id": w, "action": "bash:run", "params": {"command": "echo pwned"}})
    r = raw(server, "/execute", body.encode(), {} if ctype is None else {"Content-Type": ctype})
    assert_refused(r, 415, 1000, "Content-Type", "application/json")
    assert calls_of(server, w) == 0


def test_empty_form_post_is_415_too(server):
    r = raw(server, "/session/list", b"", {"Content-Type": "application/x-www-form-urlencoded"})
    assert_refused(r, 415, 1000)


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                                   "application/vnd.agentflow+json"])
def test_json_content_types_work(server, ctype):
    r = raw(server, "/execute", json.dumps({"worker_id": wid(), "action": "diag:noop"}), {"Content-Type": ctype})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text


def test_no_body_needs_no_content_type(server):
    r = raw(server, "/session/list", None)
    assert_refused(r, 400, 1000, "worker_id")  # the body's fields are checked, not its type


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "attacker.localhost.evil:{port}",
                                  "127.0.0.1.evil.example", "localhost.evil:{port}", "[::1].evil"])
@pytest.mark.parametrize("path, method", [("/execute", "POST"), ("/health", "GET"), ("/tools", "GET")])
def test_foreign_host_is_421(server, host, path, method):
    """DNS rebinding: the page's own name resolves to 127.0.0.1, so the browser sends
    that name as Host."""
    w = wid()
    body = json.dumps({"worker_id": w, "action": "bash:run", "params": {"command": "echo pwned"}})
    r = raw(server, path, body if method == "POST" else None, {**JSON, "Host": host.format(port=server.port)},
            method=method)
    assert_refused(r, 421, 1000, "Host", "allowed_hosts")
    assert calls_of(server, w) == 0


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.:{port}", "[::1]:{port}",
                                  "127.0.0.2:{port}", "[::ffff:127.0.0.1]:{port}", "{node}:{port}", "127.0.0.1"])
def test_own_host_names_work(server, host):
    host = host.format(port=server.port, node=socket.gethostname())
    r = raw(server, "/execute", json.dumps({"worker_id": wid(), "action": "diag:noop"}), {**JSON, "Host": host})
    assert r.status_code == 200 and r.json()["code"] == 0, (host, r.text)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}",
                                    "http://localhost:{port}.evil.example", "file://"])
def test_cross_origin_is_403(server, origin):
    w = wid()
    r = raw(server, "/execute", json.dumps({"worker_id": w, "action": "bash:run", "params": {"command": "echo x"}}),
            {**JSON, "Origin": origin.format(port=server.port)})
    assert_refused(r, 403, 1000, "origin", "allowed_origins")
    assert calls_of(server, w) == 0


def test_same_origin_works(server):
    for origin, host in ((f"http://127.0.0.1:{server.port}", None), (f"http://localhost:{server.port}",
                                                                       f"localhost:{server.port}")):
        headers = {**JSON, "Origin": origin, **({"Host": host} if host else {})}
        r = raw(server, "/execute", json.dumps({"worker_id": wid(), "action": "diag:noop"}), headers)
        assert r.status_code == 200 and r.json()["code"] == 0, (origin, r.text)


def test_configured_hosts_and_origins(server_factory):
    srv = server_factory({"server": {"allowed_hosts": ["api.example", "127.0.0.1"],
                                     "allowed_origins": ["https://ui.example"]}, "resources": {"diag": {}}})
    body = json.dumps({"worker_id": wid(), "action": "diag:noop"})
    assert raw(srv, "/execute", body, {**JSON, "Host": "api.example"}).json()["code"] == 0
    assert raw(srv, "/execute", body, JSON).json()["code"] == 0  # Host 127.0.0.1:port
    assert_refused(raw(srv, "/execute", body, {**JSON, "Host": f"localhost:{srv.port}"}), 421, 1000)
    assert raw(srv, "/execute", body, {**JSON, "Origin": "https://ui.example"}).json()["code"] == 0
    assert_refused(raw(srv, "/execute", body, {**JSON, "Origin": "https://other.example"}), 403, 1000)
    anyone = server_factory({"server": {"allowed_hosts": ["*"], "allowed_origins": ["*"]}, "resources": {"diag": {}}})
    headers = {**JSON, "Host": "whatever.example", "Origin": "http://whatever.example"}
    assert raw(anyone, "/execute", body, headers).json()["code"] == 0


def test_guard_runs_before_auth_and_the_api_still_works_for_the_client(server_factory):
    from agentflow.sandbox import Sandbox

    srv = server_factory({"resources": {"diag": {}}}, token="t0k")
    r = raw(srv, "/execute", json.dumps({"worker_id": wid(), "action": "diag:noop"}),
            {"Content-Type": "text/plain", "Authorization": "Bearer t0k"})
    assert_refused(r, 415, 1000)
    with Sandbox(server_url=srv.url, worker_id=wid(), api_token="t0k") as sb:
        assert sb.execute_sync("diag:echo", {"value": 1})["data"] == {"value": 1}


# -- 3. small inputs ---------------------------------------------------------------------
def _fill(schema: dict) -> object:
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind, "x")


def _string_params(schema: dict) -> list[str]:
    out = []
    for name, prop in schema.get("properties", {}).items():
        kinds = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
        if "string" in kinds or (prop.get("items") or {}).get("type") == "string":
            out.append(name)
    return out


def test_nul_in_every_string_parameter_of_every_tool(server):
    """Issue 12: NUL bytes in a command or seed_path gave 5000. Every string parameter
    of every tool the server lists gets one; each must be a 1002 naming it."""
    tools = server.get("/tools", params={"include_hidden": "true"}).json()["data"]["tools"]
    tried = 0
    for spec in tools:
        schema = spec["parameters"]
        base = {name: _fill(schema["properties"][name]) for name in schema.get("required", [])}
        for name in _string_params(schema):
            prop = schema["properties"][name]
            value = ["a\x00b"] if prop.get("type") == "array" else "a\x00b"
            w = wid()
            r = server.post("/execute", {"worker_id": w, "action": spec["name"], "params": {**base, name: value}})
            body = assert_refused(r, 400, 1002, name, "NUL")
            assert body["data"]["param"].startswith(name)
            assert calls_of(server, w) == 0
            tried += 1
    assert tried >= 20  # bash command, code, seed_path, query, url, …


@pytest.mark.parametrize("body, field", [
    ({"worker_id": "w", "action": "diag:noop\x00"}, "action"),
    ({"worker_id": "w", "action": "diag:noop", "trace_id": "t\x00"}, "trace_id"),
    ({"worker_id": "w", "resource_type": "bash", "config": {"k": "v\x00"}}, "config.k"),
    ({"worker_id": "w", "actions": [{"action": "bash:run", "params": {"command": "a\x00"}}]}, "command"),
    ({"worker_id": "w", "action": "diag:echo", "params": {"value": {"deep": ["ok", "a\x00"]}}}, "value.deep[1]"),
    ({"worker_id": "w", "action": "diag:echo", "params": {"value": {"k\x00": 1}}}, "value.k\\0"),
])
def test_nul_anywhere_in_a_body_is_4xx(server, body, field):
    path = "/execute/batch" if "actions" in body else "/session/create" if "resource_type" in body else "/execute"
    r = server.post(path, body)
    assert r.status_code == 400 and r.json()["code"] in (1000, 1002) and field in r.json()["message"], r.text


@pytest.mark.parametrize("action, param", [("bash:run", "command"), ("code:run", "code"), ("diag:echo", "value")])
def test_oversize_string_parameter_is_1002(server, action, param):
    """A 15 MB command (under the 16 MiB body limit) gave 5000; strings are capped at 1 MiB."""
    w = wid()
    r = server.post("/execute", {"worker_id": w, "action": action, "params": {param: "#" + "x" * 15_000_000}},
                    timeout=120)
    assert_refused(r, 400, 1002, param, str(MAX_STRING_BYTES))
    assert calls_of(server, w) == 0
    assert server.get("/health").status_code == 200


def test_string_limit_is_exactly_one_mib_of_utf8(server):
    def echo(value):
        return server.post("/execute", {"worker_id": wid(), "action": "diag:echo", "params": {"value": value}},
                           timeout=120)

    assert MAX_STRING_BYTES == 1 << 20  # the README's number
    assert echo("x" * MAX_STRING_BYTES).json()["code"] == 0
    assert_refused(echo("x" * (MAX_STRING_BYTES + 1)), 400, 1002, "value")
    assert echo("€" * (MAX_STRING_BYTES // 3)).json()["code"] == 0  # 3 bytes each: 1 byte under
    assert_refused(echo("€" * (MAX_STRING_BYTES // 3 + 1)), 400, 1002, "value")  # fewer characters, more bytes
    w = wid()
    r = server.post("/execute/batch", {"worker_id": w, "actions": [
        {"action": "diag:noop"}, {"action": "bash:run", "params": {"command": "x" * (MAX_STRING_BYTES + 1)}}]})
    assert_refused(r, 400, 1002, "actions[1]", "command")
    assert calls_of(server, w) == 0


def test_bash_runs_a_command_at_the_limit(server):
    command = "#" + "x" * (MAX_STRING_BYTES - 20) + "\necho ok"
    out = server.post("/execute", {"worker_id": wid(), "action": "bash:run", "params": {"command": command}},
                      timeout=120).json()
    assert out["code"] == 0 and out["data"]["stdout"] == "ok\n", str(out)[:500]


def test_request_body_limit_is_413_at_the_documented_default(server):
    """README: ``max_request_bytes`` 16 MiB. Many strings under 1 MiB each, so only
    the body limit can refuse it."""
    limit = 16 * 1024 * 1024
    chunk = "y" * (1 << 19)
    overhead = len(json.dumps({"worker_id": "w", "action": "diag:echo", "params": {"value": []}}))

    def body_of(size):
        n, rest = divmod(size - overhead, len(chunk) + 4)
        items = [chunk] * n + ["z" * max(rest - 4, 0)]
        data = json.dumps({"worker_id": "w", "action": "diag:echo", "params": {"value": items}}, separators=(",", ":"))
        return data

    w_over = body_of(limit + 4096).replace('"worker_id":"w"', f'"worker_id":"{wid()}"')
    assert len(w_over) > limit
    r = raw(server, "/execute", w_over.encode(), JSON)
    assert_refused(r, 413, 1000, str(limit), "max_request_bytes")
    under = body_of(limit - 4096)
    assert len(under) <= limit
    assert raw(server, "/execute", under.encode(), JSON).json()["code"] == 0


def test_request_body_limit_is_exact(server_factory):
    srv = server_factory({"server": {"max_request_bytes": 4096}, "resources": {"diag": {}}})
    head = '{"worker_id":"w","action":"diag:echo","params":{"value":"'
    tail = '"}}'
    exact = head + "x" * (4096 - len(head) - len(tail)) + tail
    assert len(exact) == 4096
    assert raw(srv, "/execute", exact, JSON).json()["code"] == 0
    over = exact.replace('"x', '"xx', 1)
    assert_refused(raw(srv, "/execute", over, JSON), 413, 1000, "4096")


def test_body_depth_limit_is_exact(server):
    """MAX_BODY_DEPTH counts the body object as level 1."""
    def nested(levels):  # params.value holding `levels` nested lists: the deepest is level 2 + levels
        return {"worker_id": wid(), "action": "diag:echo", "params": {"value": json.loads("[" * levels + "]" * levels)}}

    assert server.post("/execute", nested(MAX_BODY_DEPTH - 2)).json()["code"] == 0
    assert_refused(server.post("/execute", nested(MAX_BODY_DEPTH - 1)), 400, 1000, str(MAX_BODY_DEPTH))


def test_batch_size_limit_is_exact(server):
    items = [{"action": "diag:noop"}]
    assert server.post("/execute/batch", {"worker_id": wid(), "actions": items * 256}).json()["code"] == 0
    assert_refused(server.post("/execute/batch", {"worker_id": wid(), "actions": items * 257}), 400, 1000, "actions")


# -- request ids --------------------------------------------------------------------------
def test_request_id_limit_is_exact_and_replays_work(server):
    rid = "r" * MAX_REQUEST_ID
    body = {"worker_id": wid(), "action": "diag:echo", "params": {"value": 1}}
    first = server.post("/execute", body, headers={"X-Request-ID": rid}).json()
    again = server.post("/execute", body, headers={"X-Request-ID": rid}).json()
    assert first["code"] == 0 and first["meta"]["request_id"] == rid and again["meta"]["replayed"] is True


def test_long_request_ids_are_refused_not_cut(server):
    """Issue 12: ids were cut at 200 characters, so two distinct long ids replayed
    each other's answers. Now neither is accepted."""
    w = wid()
    prefix = "p" * 200
    for rid in (prefix + "A", prefix + "B", "q" * (MAX_REQUEST_ID + 1)):
        r = server.post("/execute", {"worker_id": w, "action": "diag:echo", "params": {"value": rid[-1]}},
                        headers={"X-Request-ID": rid})
        body = assert_refused(r, 400, 1000, "X-Request-ID", str(MAX_REQUEST_ID))
        assert body["meta"]["request_id"] != rid
    assert calls_of(server, w) == 0


@pytest.mark.parametrize("rid", ["a b", "a#0", "a\tb", "é", "a;b", "", "a\"b"])
def test_request_id_charset(server, rid):
    r = server.post("/execute", {"worker_id": wid(), "action": "diag:noop"}, headers={"X-Request-ID": rid.encode()})
    assert_refused(r, 400, 1000, "X-Request-ID")


def test_documented_limits_match_the_readme():
    """The numbers these tests enforce are the numbers the docs state (docs/http-api.md, docs/server.md)."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    readme = (docs / "http-api.md").read_text() + (docs / "server.md").read_text()
    for phrase in (f"1-{MAX_WORKER_ID}", f"1-{MAX_RESOURCE_TYPE}", f"1-{MAX_REQUEST_ID}", "1 MiB", "16 MiB",
                   f"{MAX_BODY_DEPTH} levels", "256 actions"):
        assert phrase in readme, phrase


def test_a_foreign_host_is_refused_on_a_connection_that_was_let_in_before(server):
    """The fast path remembers each connection's local address; a later request on the
    same kept-alive connection with a foreign Host is still refused, and runs nothing."""
    worker = wid()
    body = json.dumps({"worker_id": worker, "action": "diag:noop", "params": {}}).encode()

    def request(host: str) -> bytes:
        return (f"POST /execute HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def status(sock, buf: bytes) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = int(next(h.split(b":", 1)[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += sock.recv(65536)
        return int(head.split()[1]), rest[length:]

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request(f"127.0.0.1:{server.port}"))
        first, left = status(sock, b"")
        sock.sendall(request("evil.example"))
        second, _ = status(sock, left)
    assert (first, second) == (200, 421)
    assert calls_of(server, worker) == 1  # the refused request ran nothing
