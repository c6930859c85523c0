"""Serving the local model: gunicorn in this process, or a child process to start and stop.

``agentflow model serve`` runs the Flask app under gunicorn with **one** worker process
(``gthread``, a few threads): the weights are loaded once, in that worker, and requests
queue for the model (one generation at a time uses both cores best). ``timeout`` is off
because a long generation is not a hung worker.

:class:`ModelServerProcess` starts ``agentflow model serve`` as a child process in its
own process group, waits until ``/health`` answers (the model is loaded), and stops the
whole group; ``agentflow demo`` and the tests use it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

__all__ = ["DEFAULT_PORT", "ModelServerApplication", "ModelServerProcess", "ServerStartError", "free_port"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 18880
"""Default port of ``agentflow model serve`` (the sandbox server's is 18890)."""

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class ServerStartError(RuntimeError):
    """A child server exited or did not answer in time. The message ends with its last log
    lines; retrying without fixing the cause fails the same way."""


class ModelServerApplication(BaseApplication):
    """gunicorn running :func:`~agentflow.localmodel.app.create_app` on one worker.

    Args:
        host, port: Bind address.
        model_kwargs: Arguments of :class:`~agentflow.localmodel.engine.LocalModel`.
        api_key: Key clients must send (none: open, which is fine on loopback).
        threads: Request threads of the worker (requests wait for the model in turn).
    """

    def __init__(self, host: str, port: int, model_kwargs: dict[str, Any], api_key: str | None = None,
                 threads: int = 8):
        self._settings = {
            "bind": f"{host}:{port}", "workers": 1, "threads": threads, "worker_class": "gthread",
            "timeout": 0, "graceful_timeout": 10, "keepalive": 75, "accesslog": None, "errorlog": "-",
            "loglevel": "info",
            # gunicorn 23+ opens a control socket at one fixed path per user; a second
            # gunicorn (the sandbox server) would take it over or lose it
            "control_socket_disable": True,
        }
        self._model_kwargs = model_kwargs
        self._api_key = api_key
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            if key in self.cfg.settings:  # control_socket_disable exists only in newer gunicorn
                self.cfg.set(key, value)

    def load(self):
        from .app import create_app
        from .engine import LocalModel

        return create_app(LocalModel(**self._model_kwargs), api_key=self._api_key)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, timeout: float = 2.0) -> bool:
    import requests

    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


class ChildServer:
    """A server run as a child process in its own process group, with its output in a log
    file. ``start()`` waits until ``health_url`` answers 200; ``stop()`` ends the group."""

    def __init__(self, name: str, command: list[str], health_url: str, env: dict[str, str] | None = None,
                 log_dir: str | os.PathLike | None = None):
        self.name = name
        self.command = command
        self.health_url = health_url
        self.env = env
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None

    def start(self, timeout: float = 120.0) -> "ChildServer":
        """Start and wait for health.

        Raises:
            ServerStartError: the process exited, or did not answer within ``timeout`` s
                (it is stopped then).
        """
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        fd, self.log_path = tempfile.mkstemp(prefix=f"agentflow-{self.name.replace(' ', '-')}-", suffix=".log",
                                             dir=os.fspath(self.log_dir) if self.log_dir else None)
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise ServerStartError(f"the {self.name} exited with code {code} during startup; last lines of "
                                       f"{self.log_path}:\n{self.tail()}")
            if _answers(self.health_url):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the {self.name} did not answer {self.health_url} within {timeout:g} s; "
                                       f"last lines of {self.log_path}:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path or "").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(log is empty)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait up to ``grace`` s, then SIGKILL what is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(grace if sig == signal.SIGTERM else 5)
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "ChildServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ModelServerProcess(ChildServer):
    """``agentflow model serve`` as a child process on ``127.0.0.1:port`` (a free port by
    default); ``base_url`` is its OpenAI endpoint once started.

    Args:
        port: Port (default: a free one).
        model_path: GGUF file (default: the shipped one).
        model_name: Model id to serve.
        extra_args: Further ``agentflow model serve`` flags.
        env: Environment of the child (default: this process's).
    """

    def __init__(self, port: int | None = None, model_path: str | None = None, model_name: str | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_dir: str | os.PathLike | None = None):
        self.port = port or free_port()
        cmd = [sys.executable, "-m", "agentflow.cli", "model", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if model_path:
            cmd += ["--model-path", str(model_path)]
        if model_name:
            cmd += ["--model-name", model_name]
        cmd += list(extra_args or [])
        super().__init__("local model server", cmd, f"http://127.0.0.1:{self.port}/health", env=env, log_dir=log_dir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def health(self) -> dict:
        """The server's ``/health`` answer (model, load time, throughput so far)."""
        import requests

        return requests.get(self.health_url, timeout=10).json()
