"""gunicorn settings for ``gunicorn -c gunicorn.conf.py wsgi:app``.

The same defaults serve ``agentflow serve``; see agentflow/server/gunicorn_app.py.
"""
import os

from agentflow.server.gunicorn_app import (DEFAULT_THREADS, DEFAULT_WORKERS, become_subreaper,  # noqa: F401
                                          end_sessions_on_exit, post_fork)

bind = os.environ.get("AGENTFLOW_BIND", "127.0.0.1:18890")
workers = int(os.environ.get("AGENTFLOW_WORKERS", DEFAULT_WORKERS))
threads = int(os.environ.get("AGENTFLOW_THREADS", DEFAULT_THREADS))
worker_class = "agentflow.server.worker.LingeringThreadWorker"
timeout = 0
graceful_timeout = 20
keepalive = 75
control_socket_disable = True


def on_starting(server):
    """Migrate once in the master, before any worker opens the database."""
    become_subreaper(server)
    from agentflow.config import load_server_config
    from agentflow.db import upgrade

    cfg = load_server_config(os.environ.get("AGENTFLOW_CONFIG") or None)
    upgrade(cfg.effective_database_url, lock_dir=cfg.data_dir)


def on_exit(server):
    """End live sessions so a stopped server leaves no processes behind."""
    host, _, port = bind.rpartition(":")
    end_sessions_on_exit(os.environ.get("AGENTFLOW_CONFIG") or None, host.strip("[]"), int(port))
