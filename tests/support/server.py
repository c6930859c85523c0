"""Start the real AgentFlow server (``agentflow serve`` → gunicorn) for a test."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A running server: ``url``, ``home`` (its AGENTFLOW_HOME), ``db_url``, ``log``."""

    def __init__(self, proc: subprocess.Popen, port: int, home: Path, log_path: Path, token: str | None):
        self.proc = proc
        self.port = port
        self.home = home
        self.log_path = log_path
        self.token = token
        self.url = f"http://127.0.0.1:{port}"
        self.db_url = f"sqlite:///{home / 'agentflow.db'}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def post(self, path: str, body=None, **kw) -> requests.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return requests.post(self.url + path, json=body, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def workspace_of(self, session_id: str) -> Path:
        """A session's workspace folder, as recorded in the sessions table."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return Path(conn.execute(text("select workspace from sessions where id = :i"),
                                         {"i": session_id}).scalar_one())
        finally:
            engine.dispose()

    def state_of(self, session_id: str) -> dict:
        """A session's recorded state (``sessions.state``: its jail, display…)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                raw = conn.execute(text("select state from sessions where id = :i"), {"i": session_id}).scalar_one()
        finally:
            engine.dispose()
        return raw if isinstance(raw, dict) else json.loads(raw)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children that are forks of it. The master
        also keeps the warm pool's confined sessions (``bwrap``) as children; they are
        not workers."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        master = _cmdline(self.proc.pid)
        if master is None:
            return []
        return [pid for pid in map(int, out.split()) if _cmdline(pid) == master]

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (a crash, no cleanup)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_server(
    home: Path,
    config: dict | None = None,
    workers: int | None = 2,
    threads: int | None = 8,
    env: dict | None = None,
    token: str | None = None,
    wait: float = 60.0,
    port: int | None = None,
    prefix: list[str] | None = None,
) -> ServerProcess:
    """Run ``agentflow serve`` in ``home`` on ``port`` (default: a free one) and wait
    for ``/health``. Starting again on an old server's home and port restarts it.
    ``prefix``: a command the server runs under (e.g. one that drops to another user)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
    if workers is not None:  # None: the server's own defaults
        cmd += ["--workers", str(workers)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if config is not None:
        cfg_path = home / "server-config.json"
        cfg_path.write_text(json.dumps(config))
        cmd += ["--config", str(cfg_path)]
    full_env = {**os.environ, "AGENTFLOW_HOME": str(home), **(env or {})}
    full_env.pop("AGENTFLOW_DATABASE_URL", None)
    full_env.pop("AGENTFLOW_CONFIG", None)
    if token:
        full_env["AGENTFLOW_API_TOKEN"] = token
    log_path = home / "server.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([*(prefix or []), *cmd], cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess(proc, port, home, log_path, token)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if requests.get(server.url + "/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer /health within {wait}s:\n{server.log_text()}")


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return None
