"""auto_start_server=True: start a local server when none answers, stop it on close."""
from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from agentflow.sandbox import Sandbox, SandboxConnectionError, SandboxServerStartError
from tests.support.server import free_port


def processes_with_env(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has ``key=value`` (a /proc scan)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != b"Z":
            found.append(int(entry))
    return found


def wait_gone(home: str, limit: float = 10.0) -> list[int]:
    deadline = time.monotonic() + limit
    while (left := processes_with_env("AGENTFLOW_HOME", home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private AGENTFLOW_HOME: the auto-started server inherits it, and it marks its processes."""
    path = str(tmp_path / "home")
    monkeypatch.setenv("AGENTFLOW_HOME", path)
    monkeypatch.delenv("AGENTFLOW_CONFIG", raising=False)
    monkeypatch.delenv("AGENTFLOW_API_TOKEN", raising=False)
    return path


def test_auto_start_then_close_leaves_no_process(home):
    url = f"http://127.0.0.1:{free_port()}"
    sb = Sandbox(server_url=url, auto_start_server=True, server_startup_timeout=60)
    with sb:
        assert sb.server_process is not None and sb.server_process.poll() is None
        assert sb.execute_sync("diag:noop")["code"] == 0
        sb.create_session_sync("bash")
        assert sb.execute_sync("bash:run", {"command": "echo up"})["data"]["stdout"] == "up\n"
        assert sb.get_status_sync()["server_started_here"] is True
        assert processes_with_env("AGENTFLOW_HOME", home)
        # A second Sandbox on the same URL uses the running server instead of starting one.
        other = Sandbox(server_url=url, auto_start_server=True)
        assert other.start_sync().server_process is None
        other.close_sync()
        master = sb.server_process
    assert master.poll() is not None
    assert wait_gone(home) == []
    with pytest.raises(SandboxConnectionError):
        Sandbox(server_url=url, timeout=2).start_sync()


def test_async_auto_start_and_shutdown_server(home):
    url = f"http://127.0.0.1:{free_port()}"

    async def run():
        async with Sandbox(server_url=url, auto_start_server=True) as sb:
            assert (await sb.execute("diag:noop"))["code"] == 0
            master = sb.server_process
            result = await sb.shutdown_server()
            return master, result

    master, result = asyncio.run(run())
    assert result["code"] == 0 and result["data"]["shutting_down"] is True
    assert master.poll() is not None
    assert wait_gone(home) == []


def test_shutdown_server_sync_stops_an_external_server(server_factory):
    srv = server_factory()
    with Sandbox(server_url=srv.url) as sb:
        assert sb.shutdown_server_sync(cleanup_sessions=True)["code"] == 0
    srv.proc.wait(15)


def test_bad_config_fails_with_log_lines(home, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"resources": {"no_such_backend": {"enabled": True}}}))
    sb = Sandbox(server_url=f"http://127.0.0.1:{free_port()}", auto_start_server=True, config_path=config)
    with pytest.raises(SandboxServerStartError) as err:
        sb.start_sync()
    message = str(err.value)
    assert "exited with code" in message and "no_such_backend" in message  # the server's own words
    assert wait_gone(home) == []
    os.unlink(err.value.data["log_path"])  # kept for the user on failure


def test_startup_timeout_stops_the_server_and_reports(home):
    sb = Sandbox(server_url=f"http://127.0.0.1:{free_port()}", auto_start_server=True, server_startup_timeout=0.05)
    with pytest.raises(SandboxServerStartError) as err:
        sb.start_sync()
    assert "did not answer /health" in str(err.value) and "last log lines" in str(err.value)
    assert wait_gone(home) == []
    os.unlink(err.value.data["log_path"])


def test_missing_config_file_and_remote_url_are_refused(tmp_path):
    with pytest.raises(SandboxServerStartError, match="not found"):
        Sandbox(server_url=f"http://127.0.0.1:{free_port()}", auto_start_server=True,
                config_path=tmp_path / "missing.json").start_sync()
    with pytest.raises(SandboxServerStartError, match="only start a server on this machine"):
        Sandbox(server_url="http://192.0.2.1:18890", auto_start_server=True, timeout=1).start_sync()
