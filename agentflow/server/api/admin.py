"""GET /health, POST /shutdown, GET /openapi.json."""
from __future__ import annotations

import logging
import os
import signal
import threading

from flask import Blueprint, current_app, jsonify, request

from ...runtime.errors import Unauthorized
from ...version import __version__
from ..envelope import envelope, load_body, runtime
from ..middleware import authenticated, idempotent
from ..schemas import ShutdownBody

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__)
_shutdown = ShutdownBody()


@bp.get("/health")
def health():
    return jsonify({"status": "ok", "version": __version__, "isolation": runtime().isolation_report()})


@bp.get("/openapi.json")
def openapi():
    from ..openapi import spec_dict

    return jsonify(spec_dict(current_app))


def _from_loopback() -> bool:
    addr = request.remote_addr or ""
    return addr.startswith("127.") or addr == "::1"


@bp.post("/shutdown")
@idempotent("shutdown")
def shutdown():
    rt = runtime()
    if not (authenticated() or (not rt.config.auth_token and _from_loopback())):
        raise Unauthorized("shutdown is allowed only with the server's token, or from loopback when no token is set")
    body = load_body(_shutdown)
    ended = rt.sessions.end_all("server shutdown") if body["cleanup_sessions"] else 0
    master = int(os.environ.get("AGENTFLOW_MASTER_PID") or os.getpid())
    sig = signal.SIGINT if body["force"] else signal.SIGTERM
    log.warning("shutdown requested by %s: signalling pid %d with %s", request.remote_addr, master, sig.name)
    threading.Timer(0.2, os.kill, (master, sig)).start()
    return envelope({"sessions_cleaned": ended, "force": body["force"], "shutting_down": True}, 0,
                    "server is shutting down"), 200
