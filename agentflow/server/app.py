"""The application factory: the only place a Flask app is built."""
from __future__ import annotations

import atexit
import logging
import os

from flask import Flask

from ..config import ServerConfig, load_server_config
from ..runtime import Runtime
from . import errors, middleware, reference
from . import mcp_endpoint
from .api import BLUEPRINTS
from .fastpath import ExecuteFastPath
from .guard import HostPolicy

log = logging.getLogger(__name__)


def create_app(config: ServerConfig | None = None, *, migrate: bool = True, background: bool = True) -> Flask:
    """Build the AgentFlow server app.

    Args:
        config: server config; default: ``AGENTFLOW_CONFIG`` (a file) or built-in defaults.
        migrate: run Alembic migrations first (safe to do from every process).
        background: start the session cleaner and configured warmup threads.

    Raises:
        ConfigError, BackendConfigError, DatabaseError: the server cannot start as configured.
    """
    if config is None:
        config = load_server_config(os.environ.get("AGENTFLOW_CONFIG") or None)
    app = Flask("agentflow")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.config["JSON_SORT_KEYS"] = False
    runtime = Runtime(config, migrate=migrate)
    app.extensions["agentflow"] = runtime
    errors.init_app(app)
    middleware.init_app(app)
    mcp_endpoint.init_app(app)  # /mcp: the tools over MCP Streamable HTTP
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    for bp in reference.BLUEPRINTS:  # /api/v1: the AgentFlow reference's protocol (agentflow.server.reference)
        app.register_blueprint(bp)
    # ordinary POST /execute requests skip Flask's per-request machinery (see fastpath)
    app.wsgi_app = ExecuteFastPath(app.wsgi_app, runtime, HostPolicy(config), config.max_request_bytes)
    if background:
        from .gunicorn_app import leave_when_orphaned

        runtime.start_background(on_orphaned=leave_when_orphaned)
    atexit.register(runtime.close)
    return app
