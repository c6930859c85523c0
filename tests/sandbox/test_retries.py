"""Retries, idempotent replays, and servers that are down or hang."""
from __future__ import annotations

import socket
import time

import pytest

from agentflow.sandbox import (
    HTTPClientConfig,
    HTTPServiceClient,
    Sandbox,
    SandboxConnectionError,
    SandboxServerError,
    SandboxTimeoutError,
)
from tests.support.server import free_port

from ._netfakes import DroppingProxy, ScriptedServer

FAST_BACKOFF = {"backoff_factor": 0.01, "backoff_jitter": 0.01}


@pytest.fixture
def proxy(server):
    p = DroppingProxy(server.port, match=b"POST /execute", drops=1)
    yield p
    p.close()


def test_dropped_response_is_retried_and_replayed_without_running_twice(proxy, call):
    # Side effect: a line appended to a file in the worker's session workspace.
    with Sandbox(server_url=proxy.url, max_retries=3) as sb:
        sb.create_session_sync("bash")
        result = call(sb, "execute", "bash:run", {"command": "echo ran >> runs.txt; echo done"})
        assert proxy.dropped == 1  # the first answer never reached the client
        assert result["code"] == 0 and result["data"]["stdout"] == "done\n"
        assert result["meta"].get("replayed") is True
        runs = sb.execute_sync("bash:run", {"command": "cat runs.txt"})["data"]["stdout"]
        sb.destroy_session_sync("bash")
    assert runs == "ran\n"  # the tool ran exactly once


def test_dropped_batch_is_replayed(server, worker_id):
    proxy = DroppingProxy(server.port, match=b"POST /execute/batch", drops=1)
    client = HTTPServiceClient(HTTPClientConfig(base_url=proxy.url))
    try:
        client.create_session(worker_id, "bash")
        actions = [{"action": "bash:run", "params": {"command": f"echo {i} >> batch.txt"}} for i in range(3)]
        result = client.execute_batch(worker_id, actions)
        runs = client.execute(worker_id, "bash:run", {"command": "cat batch.txt"})["data"]["stdout"]
        client.destroy_session(worker_id, "bash")
    finally:
        client.close()
        proxy.close()
    assert proxy.dropped == 1 and result["code"] == 0 and result["data"]["succeeded"] == 3
    assert runs == "0\n1\n2\n"


def test_without_retries_a_dropped_connection_raises(proxy):
    client = HTTPServiceClient(HTTPClientConfig(base_url=proxy.url, max_retries=0))
    with pytest.raises(SandboxConnectionError) as err:
        client.execute("w_noretry", "diag:noop")
    assert err.value.request_id and proxy.url in str(err.value)
    client.close()


def test_retries_reuse_one_request_id_and_return_503_envelope():
    not_ready = {"code": 2003, "message": "backend not ready", "data": {"error": "index loading"}, "meta": {}}
    fake = ScriptedServer([(503, not_ready, 0)])
    try:
        client = HTTPServiceClient(HTTPClientConfig(base_url=fake.url, max_retries=2, **FAST_BACKOFF))
        result = client.execute("w", "rag:search", {"query": "x"})
    finally:
        fake.close()
    assert result["code"] == 2003 and result["data"]["error"] == "index loading"
    ids = {headers["X-Request-ID"] for _, _, headers in fake.requests}
    assert len(fake.requests) == 3 and len(ids) == 1  # first try + 2 retries, one id


def test_502_then_success_and_502_forever():
    ok = {"code": 0, "message": "success", "data": {"v": 1}, "meta": {}}
    fake = ScriptedServer([(502, "<html>bad gateway</html>", 0), (200, ok, 0)])
    try:
        client = HTTPServiceClient(HTTPClientConfig(base_url=fake.url, max_retries=3, **FAST_BACKOFF))
        assert client.execute("w", "diag:noop")["data"] == {"v": 1}
    finally:
        fake.close()
    fake = ScriptedServer([(502, "<html>bad gateway</html>", 0)])
    try:
        client = HTTPServiceClient(HTTPClientConfig(base_url=fake.url, max_retries=1, **FAST_BACKOFF))
        with pytest.raises(SandboxServerError) as err:
            client.execute("w", "diag:noop")
        assert err.value.status == 502 and len(fake.requests) == 2
    finally:
        fake.close()


def test_500_is_not_retried_and_raises_with_code():
    boom = {"code": 5000, "message": "internal error", "data": {}, "meta": {"request_id": "rid-1"}}
    fake = ScriptedServer([(500, boom, 0)])
    try:
        client = HTTPServiceClient(HTTPClientConfig(base_url=fake.url, **FAST_BACKOFF))
        with pytest.raises(SandboxServerError) as err:
            client.execute("w", "diag:noop")
    finally:
        fake.close()
    assert err.value.code == 5000 and err.value.request_id == "rid-1" and len(fake.requests) == 1


def test_read_timeout_is_not_retried():
    fake = ScriptedServer([(200, {"code": 0, "data": {}}, 2.0)])
    try:
        client = HTTPServiceClient(HTTPClientConfig(base_url=fake.url, timeout=0.5, max_retries=3))
        started = time.monotonic()
        with pytest.raises(SandboxTimeoutError) as err:
            client.execute("w", "diag:noop")
        assert time.monotonic() - started < 1.5
        assert len(fake.requests) == 1 and err.value.request_id in str(err.value)
    finally:
        fake.close()


@pytest.mark.parametrize("timeout", [1.0, 3.0])
def test_server_down_is_reported_within_the_timeout(timeout):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sb = Sandbox(server_url=url, timeout=timeout, max_retries=3)
    started = time.monotonic()
    with pytest.raises(SandboxConnectionError) as err:
        sb.execute_sync("diag:noop")
    assert url in str(err.value)
    client = HTTPServiceClient(HTTPClientConfig(base_url=url, timeout=timeout, max_retries=3))
    with pytest.raises(SandboxConnectionError) as err:
        client.execute("w", "diag:noop")
    assert "refused" in str(err.value) and f"{url}/execute" in str(err.value)
    assert time.monotonic() - started < timeout + 1.0  # hang check, not a speed claim


def test_server_that_never_answers_is_reported_within_the_timeout():
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:  # accepts into the backlog, never replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = HTTPServiceClient(HTTPClientConfig(base_url=url, timeout=1.0, max_retries=3))
        started = time.monotonic()
        with pytest.raises(SandboxTimeoutError):
            client.execute("w", "diag:noop")
        assert time.monotonic() - started < 1.0 + 1.0
