"""A local server started by ``Sandbox(auto_start_server=True)``: start, wait, stop.

The server runs as ``python -m agentflow.cli serve`` in its own process group, with
its output in a temporary log file. Stopping it sends SIGTERM to the whole group,
then SIGKILL to whatever is left, so no process outlives ``Sandbox.close()``.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .errors import SandboxServerStartError

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding agentflow/
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_TAIL_LINES = 20


def local_address(server_url: str) -> tuple[str, int]:
    """The (host, port) to bind for ``server_url``; only loopback URLs qualify.

    Raises:
        SandboxServerStartError: the URL names another machine.
    """
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    if host not in _LOOPBACK and not host.startswith("127."):
        raise SandboxServerStartError(
            f"auto_start_server can only start a server on this machine, but server_url is {server_url!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return ("127.0.0.1" if host == "localhost" else host), port


class LocalServer:
    """One ``agentflow serve`` child process.

    Args:
        server_url: The URL the server must answer on (loopback only).
        config_path: Server config file passed as ``--config``.
        api_token: Token the server should require (``AGENTFLOW_API_TOKEN``).
    """

    def __init__(self, server_url: str, config_path: str | os.PathLike | None = None, api_token: str | None = None):
        self.host, self.port = local_address(server_url)
        self.config_path = os.fspath(config_path) if config_path is not None else None
        self.api_token = api_token
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None

    @property
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "agentflow.cli", "serve", "--host", self.host, "--port", str(self.port)]
        if self.config_path:
            cmd += ["--config", os.path.abspath(self.config_path)]
        return cmd

    def start(self, is_up: Callable[[], bool], startup_timeout: float) -> None:
        """Start the process and wait until ``is_up()`` is true.

        Raises:
            SandboxServerStartError: the process exited, or did not come up within
                ``startup_timeout`` seconds (it is stopped then). The message ends
                with the last lines of its log.
        """
        if self.config_path and not os.path.isfile(self.config_path):
            raise SandboxServerStartError(f"server config file not found: {self.config_path}")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        if self.api_token:
            env["AGENTFLOW_API_TOKEN"] = self.api_token
        fd, self.log_path = tempfile.mkstemp(prefix=f"agentflow-server-{self.port}-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        logger.info("started sandbox server pid %s on %s:%s (log %s)", self.proc.pid, self.host, self.port, self.log_path)
        deadline = time.monotonic() + startup_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop(remove_log=False)
                raise SandboxServerStartError(
                    f"the sandbox server exited with code {code} during startup "
                    f"(command: {' '.join(self.command)}); last log lines from {self.log_path}:\n{self.tail()}",
                    data={"log_path": self.log_path, "exit_code": code},
                )
            if is_up():
                return
            if time.monotonic() >= deadline:
                self.stop(remove_log=False)
                raise SandboxServerStartError(
                    f"the sandbox server did not answer /health on {self.host}:{self.port} within "
                    f"{startup_timeout:g} s and was stopped; last log lines from {self.log_path}:\n{self.tail()}",
                    data={"log_path": self.log_path},
                )
            time.sleep(0.1)

    def tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                text = fh.read().decode("utf-8", errors="replace")
        except OSError as err:
            return f"(log unreadable: {err})"
        return "\n".join(text.rstrip("\n").splitlines()[-lines:]) or "(log is empty)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the main process to exit; True when it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = 10.0, remove_log: bool = True) -> None:
        """SIGTERM the process group, wait up to ``grace`` s, then SIGKILL what is left."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own group
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            if not self.wait(grace):
                logger.warning("sandbox server pid %s ignored SIGTERM for %g s; killing it", proc.pid, grace)
        # Workers or tool processes may outlive the master: kill the rest of the group.
        _signal_group(pgid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)
        self.proc = None
        if remove_log and self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
