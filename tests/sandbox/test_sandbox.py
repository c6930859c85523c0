"""Every Sandbox method, in its sync and async form, against the real server."""
from __future__ import annotations

import asyncio
import inspect
import threading
import uuid

import pytest

import agentflow.sandbox as sandbox_pkg
from agentflow.sandbox import Sandbox, SandboxRequestError

SYNC_METHODS = sorted(name for name in dir(Sandbox) if name.endswith("_sync") and not name.startswith("_"))


def test_public_names_import():
    for name in sandbox_pkg.__all__:
        assert getattr(sandbox_pkg, name) is not None
    from agentflow.sandbox.client import HTTPClientConfig, HTTPServiceClient  # noqa: F401  (SPEC import path)


@pytest.mark.parametrize("sync_name", SYNC_METHODS)
def test_every_sync_method_has_an_async_twin_with_the_same_signature(sync_name):
    twin = getattr(Sandbox, sync_name[: -len("_sync")], None)
    assert twin is not None, f"{sync_name} has no async twin"
    assert inspect.iscoroutinefunction(twin), f"{twin.__name__} is not async"
    assert inspect.signature(twin) == inspect.signature(getattr(Sandbox, sync_name))


def test_spec_methods_exist():
    spec = ["execute", "execute_batch", "create_session", "destroy_session", "list_sessions", "refresh_session",
            "warmup", "get_warmup_status", "list_tools", "get_status", "shutdown_server", "start", "close"]
    assert set(spec) <= {name[: -len("_sync")] for name in SYNC_METHODS}


def test_execute_success_failure_and_timeout_are_results(sandbox, call):
    ok = call(sandbox, "execute", "diag:echo", {"value": [1, "two"]})
    assert ok["code"] == 0 and ok["data"] == {"value": [1, "two"]}
    meta = ok["meta"]
    assert meta["tool"] == "diag:echo" and meta["resource_type"] == "diag" and meta["request_id"]
    failed = call(sandbox, "execute", "diag:echo", {"value": 7, "fail": True})
    assert failed["code"] == 2001 and failed["data"] == {"value": 7}
    timed_out = call(sandbox, "execute", "diag:sleep", {"seconds": 5}, timeout=0.2)
    assert timed_out["code"] == 2002


def test_execute_passes_trace_id_and_aliases(sandbox, call):
    result = call(sandbox, "execute", "bash-run", {"command": "echo hi"}, trace_id="trace-abc")
    assert result["code"] == 0 and result["data"]["stdout"] == "hi\n"
    assert result["meta"]["trace_id"] == "trace-abc" and result["meta"]["tool"] == "bash:run"


def test_protocol_errors_raise_with_code(sandbox, call):
    with pytest.raises(SandboxRequestError) as err:
        call(sandbox, "execute", "diag:nope")
    assert err.value.code == 1001 and "diag:noop" in err.value.message and err.value.request_id
    with pytest.raises(SandboxRequestError) as err:
        call(sandbox, "execute", "diag:echo", {"value": "__param_error__"})
    assert err.value.code == 1002 and "value" in str(err.value)
    with pytest.raises(SandboxRequestError) as err:
        call(sandbox, "destroy_session", "bash")  # no such session
    assert err.value.code == 1003 and err.value.status == 409


def test_execute_batch(sandbox, call):
    actions = [{"action": "diag:echo", "params": {"value": 1}},
               {"action": "diag:echo", "params": {"value": 2, "fail": True}},
               {"action": "diag:noop", "params": {}}]
    result = call(sandbox, "execute_batch", actions)  # sequential, stop at the first failure
    assert result["code"] == 2001
    assert [r["code"] for r in result["data"]["results"]] == [0, 2001]
    result = call(sandbox, "execute_batch", actions, parallel=True, stop_on_error=False)
    assert [r["code"] for r in result["data"]["results"]] == [0, 2001, 0]
    assert result["data"]["succeeded"] == 2
    # An unknown tool inside a batch is an item result, not an exception.
    result = call(sandbox, "execute_batch", [{"action": "diag:nope", "params": {}}], stop_on_error=False)
    assert result["code"] == 1001 and result["data"]["results"][0]["code"] == 1001


def test_session_lifecycle(sandbox, call):
    created = call(sandbox, "create_session", "bash", {"custom_name": "my_shell"})
    assert created["code"] == 0 and created["data"]["created"] is True
    assert created["data"]["session_status"] == "active" and created["data"]["session_name"] == "my_shell"
    again = call(sandbox, "create_session", "bash")
    assert again["code"] == 0 and again["data"]["created"] is False
    assert again["data"]["session_id"] == created["data"]["session_id"]

    call(sandbox, "execute", "bash:run", {"command": "echo kept > note.txt"})
    echoed = call(sandbox, "execute", "bash:run", {"command": "cat note.txt"})  # same session workspace
    assert echoed["data"]["stdout"] == "kept\n" and echoed["meta"]["temporary_session"] is False
    assert echoed["meta"]["session_id"] == created["data"]["session_id"]

    listed = call(sandbox, "list_sessions")
    assert [s["resource_type"] for s in listed["data"]["sessions"]] == ["bash"]
    before = listed["data"]["sessions"][0]["expires_at"]
    refreshed = call(sandbox, "refresh_session", "bash")
    assert refreshed["code"] == 0 and refreshed["data"]["sessions"][0]["expires_at"] >= before
    assert call(sandbox, "refresh_session")["code"] == 0

    destroyed = call(sandbox, "destroy_session", "bash")
    assert destroyed["code"] == 0 and destroyed["data"]["session_id"] == created["data"]["session_id"]
    assert call(sandbox, "list_sessions")["data"]["sessions"] == []


def test_tools_warmup_and_status(sandbox, call):
    tools = call(sandbox, "list_tools")["data"]["tools"]
    names = {t["name"] for t in tools}
    assert "bash:run" in names and "diag:noop" not in names
    assert "diag:noop" in {t["name"] for t in call(sandbox, "list_tools", include_hidden=True)["data"]["tools"]}
    openai_tools = call(sandbox, "list_tools", format="openai")["data"]["tools"]
    assert {"type": "function"} .items() <= openai_tools[0].items()
    assert all(":" not in t["function"]["name"] for t in openai_tools)

    assert call(sandbox, "warmup", ["bash"])["code"] == 0
    assert call(sandbox, "warmup", "bash")["code"] == 0
    assert call(sandbox, "warmup")["code"] == 0
    backends = call(sandbox, "get_warmup_status")["data"]["backends"]
    assert backends["bash"]["warmed_up"] is True

    call(sandbox, "create_session", "bash")
    status = call(sandbox, "get_status")
    assert status["health"]["status"] == "ok" and status["worker_id"] == sandbox.worker_id
    assert status["warmup"]["backends"]["bash"]["loaded"] is True
    assert [s["resource_type"] for s in status["sessions"]] == ["bash"]
    call(sandbox, "destroy_session", "bash")


def test_start_close_and_context_managers(server, call):
    sb = Sandbox(server_url=server.url)
    assert sb.worker_id.startswith("worker_") and len(sb.worker_id) == len("worker_") + 8
    assert call(sb, "start") is sb and sb.is_started
    call(sb, "close")
    assert not sb.is_started
    assert sb.execute_sync("diag:noop")["code"] == 0  # a closed Sandbox starts again on use

    async def use_async():
        async with Sandbox(server_url=server.url) as asb:
            return await asb.execute("diag:noop")

    assert asyncio.run(use_async())["code"] == 0
    with Sandbox(server_url=server.url) as ssb:
        assert ssb.execute_sync("diag:noop")["code"] == 0


def test_client_openapi_and_health(sandbox):
    assert sandbox.client.health()["status"] == "ok"
    doc = sandbox.client.openapi()
    assert doc["openapi"].startswith("3") and "/execute" in doc["paths"]


def test_one_sandbox_from_32_threads(sandbox):
    errors, results = [], {}

    def worker(n):
        try:
            for i in range(5):
                value = f"{n}-{i}"
                result = sandbox.execute_sync("diag:echo", {"value": value})
                results[value] = result["data"]["value"]
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 160 and all(k == v for k, v in results.items())


def test_many_async_calls_at_once(sandbox):
    async def run():
        return await asyncio.gather(*(sandbox.execute("diag:sleep", {"seconds": 0.3}) for _ in range(32)))

    results = asyncio.run(run())
    assert [r["code"] for r in results] == [0] * 32


def test_worker_ids_are_isolated(server):
    a = Sandbox(server_url=server.url, worker_id=f"iso_a_{uuid.uuid4().hex[:6]}")
    b = Sandbox(server_url=server.url, worker_id=f"iso_b_{uuid.uuid4().hex[:6]}")
    with a, b:
        a.create_session_sync("bash")
        b.create_session_sync("bash")
        a.execute_sync("bash:run", {"command": "echo a > mine.txt"})
        b.execute_sync("bash:run", {"command": "echo b > theirs.txt"})
        assert a.execute_sync("bash:run", {"command": "ls"})["data"]["stdout"] == "mine.txt\n"
        assert b.execute_sync("bash:run", {"command": "ls"})["data"]["stdout"] == "theirs.txt\n"
        sa, sb_ = a.list_sessions_sync()["data"]["sessions"], b.list_sessions_sync()["data"]["sessions"]
        assert len(sa) == len(sb_) == 1 and sa[0]["session_id"] != sb_[0]["session_id"]
        a.destroy_session_sync("bash")
        assert b.list_sessions_sync()["data"]["sessions"][0]["status"] == "active"
        b.destroy_session_sync("bash")


def test_as_worker_shares_the_pool_but_not_sessions(server):
    owner = Sandbox(server_url=server.url, worker_id=f"own_{uuid.uuid4().hex[:6]}")
    views = [owner.as_worker(f"view{i}_{uuid.uuid4().hex[:6]}") for i in range(4)]
    assert all(v.client is owner.client for v in views)
    assert all(not v.is_started for v in views)
    with owner:
        for i, v in enumerate(views):
            v.start_sync()
            v.create_session_sync("bash")
            v.execute_sync("bash:run", {"command": f"echo {i} > mine.txt"})
        for i, v in enumerate(views):  # each worker has its own session and workspace
            assert v.execute_sync("bash:run", {"command": "cat mine.txt"})["data"]["stdout"] == f"{i}\n"
            assert len(v.list_sessions_sync()["data"]["sessions"]) == 1
        assert owner.list_sessions_sync()["data"]["sessions"] == []
        views[0].close_sync()  # a view's close leaves the shared pool usable
        assert views[1].execute_sync("diag:echo", {"value": "x"})["data"]["value"] == "x"
        for v in views:
            v.destroy_session_sync("bash")
    assert not owner.is_started


def test_as_worker_from_threads_keeps_each_worker_apart(server):
    owner = Sandbox(server_url=server.url, worker_id=f"own_{uuid.uuid4().hex[:6]}", pool_maxsize=8)
    seen, errors = {}, []

    def work(n):
        try:
            v = owner.as_worker(f"thr{n}_{uuid.uuid4().hex[:6]}")
            for i in range(3):
                seen[(n, i)] = v.execute_sync("diag:echo", {"value": f"{n}.{i}"})["data"]["value"]
        except Exception as err:  # collected and asserted below
            errors.append(err)

    with owner:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and seen == {(n, i): f"{n}.{i}" for n in range(16) for i in range(3)}
