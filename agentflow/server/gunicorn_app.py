"""Running the app under gunicorn: defaults, hooks, and the embedded application that
``agentflow serve`` uses (``gunicorn.conf.py`` at the repository root reuses these)."""
from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

# Chosen by measurement (README, "Operating AgentFlow"): on 2 cores, 2 gthread workers
# (agentflow.server.worker: gthread whose threads keep serving a busy connection)
# serve the no-op tool with the lowest CPU per call and latency up to 64 clients (more
# processes only add context switches); 32 threads each let 64 calls that block on a
# tool (bash, kernels) run at once.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 32


def become_subreaper(server=None) -> None:
    """Session jails are started detached (their launcher's parent exits at once), so
    they are orphans: make the master their reaper, so they never linger as zombies
    when the machine's pid 1 does not reap (a container's often does not). gunicorn's
    master reaps unknown children in its SIGCHLD handler."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_worker = None
"""This process's gunicorn worker (set after the fork)."""


def post_fork(server, worker) -> None:
    global _worker
    # /shutdown signals the master; workers learn its pid here.
    os.environ["AGENTFLOW_MASTER_PID"] = str(server.pid)
    _worker = worker


ORPHAN_GRACE_SECONDS = 2.0
"""How long a worker whose master died may finish its calls before it exits."""


def leave_when_orphaned() -> None:
    """The master is dead, so this node is going away: stop taking connections and exit
    after a short grace. gunicorn alone would wait up to ``graceful_timeout`` (20 s) on a
    kept-alive connection, holding requests that other nodes forward here long after
    the node's lease says it is gone. A call cut off is like a killed worker's: its
    retry gets 2004, and nothing acknowledged is lost."""
    import threading

    for sock in getattr(_worker, "sockets", None) or []:
        try:
            sock.close()
        except OSError:
            pass
    exit_timer = threading.Timer(ORPHAN_GRACE_SECONDS, os._exit, (1,))
    exit_timer.daemon = True
    exit_timer.start()


def end_sessions_on_exit(config_path: str | None, host: str | None = None, port: int | None = None) -> None:
    """Master's last act: end every live session (kernels, displays, browsers), so a
    stopped server leaves no processes behind. A server killed with SIGKILL cannot do
    this; the next one's cleaner ends the sessions when they expire."""
    import logging

    from ..config import load_server_config
    from ..runtime import Runtime

    try:
        config = load_server_config(config_path)
        # the node is named after the bound address (its default node_id has the port)
        config.host, config.port = host or config.host, port or config.port
        runtime = Runtime(config, migrate=False)
    except Exception:  # noqa: BLE001 - exiting anyway; say why sessions stay
        logging.getLogger(__name__).exception("could not end live sessions at exit")
        return
    try:
        runtime.cluster.stop()
        ended = runtime.sessions.end_all("server stopped")
        if ended:
            logging.getLogger(__name__).info("ended %d live session(s) at exit", ended)
    finally:
        runtime.close()


def base_settings(host: str, port: int, workers: int | None, threads: int | None,
                  config_path: str | None = None) -> dict:
    return {
        "bind": f"{host}:{port}",
        "workers": workers or DEFAULT_WORKERS,
        "threads": threads or DEFAULT_THREADS,
        "worker_class": "agentflow.server.worker.LingeringThreadWorker",
        "timeout": 0,  # tool calls may legitimately run long; a hung worker is not our signal
        "graceful_timeout": 20,
        "keepalive": 75,
        "control_socket_disable": True,  # a fixed path that several servers would fight over
        "post_fork": post_fork,
        "on_starting": become_subreaper,
        "on_exit": lambda server: end_sessions_on_exit(config_path, host, port),
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
    }


def bind_host(bind: str) -> str:
    """The host part of a gunicorn ``bind`` (``host:port``, ``[v6]:port``)."""
    host = bind.rsplit(":", 1)[0] if bind.count(":") == 1 or bind.startswith("[") else bind
    return host.strip("[]")


class AgentFlowApplication(BaseApplication):
    """gunicorn with AgentFlow's app factory; each worker builds its own app after fork."""

    def __init__(self, settings: dict, config_path: str | None):
        self._settings = settings
        self._config_path = config_path
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app
        from ..config import load_server_config

        config = load_server_config(self._config_path)
        # --host/--port may differ from the config's; the Host check and the node's
        # default name and URL must know the bound ones
        config.host = bind_host(self._settings["bind"])
        config.port = int(self._settings["bind"].rsplit(":", 1)[1])
        return create_app(config, migrate=False)
