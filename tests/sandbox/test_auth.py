"""Bearer-token auth against a server started with a token."""
from __future__ import annotations

import pytest

from agentflow.sandbox import Sandbox, SandboxAuthError
from tests.support.server import start_server


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("token_server"), token="s3cret")
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch):
    monkeypatch.delenv("AGENTFLOW_API_TOKEN", raising=False)


def test_missing_and_wrong_token_raise_auth_error(token_server, call):
    with Sandbox(server_url=token_server.url) as sb:  # /health is open, so start() works
        with pytest.raises(SandboxAuthError) as err:
            call(sb, "execute", "diag:noop")
    assert err.value.code == 1004 and err.value.status == 401 and "missing" in err.value.message
    with Sandbox(server_url=token_server.url, api_token="wrong") as sb:
        with pytest.raises(SandboxAuthError) as err:
            call(sb, "list_sessions")
        with pytest.raises(SandboxAuthError):
            call(sb, "shutdown_server")
    assert err.value.code == 1004
    assert token_server.proc.poll() is None  # the refused shutdown did nothing


def test_right_token_from_argument_or_environment(token_server, monkeypatch):
    with Sandbox(server_url=token_server.url, api_token="s3cret") as sb:
        assert sb.execute_sync("diag:noop")["code"] == 0
        assert sb.list_tools_sync()["code"] == 0
    monkeypatch.setenv("AGENTFLOW_API_TOKEN", "s3cret")
    with Sandbox(server_url=token_server.url) as sb:
        assert sb.execute_sync("diag:noop")["code"] == 0
