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


def check_shutdown_allowed() -> None:
    """Raise Unauthorized unless the caller may stop the server: it has the token, or
    no token is set and it is on loopback."""
    if not (authenticated() or (not runtime().config.auth_token and _from_loopback())):
        raise Unauthorized("shutdown is allowed only with the server's token, or from loopback when no token is set")


def begin_shutdown(force: bool, cleanup_sessions: bool) -> int:
    """End this node's sessions (when asked) and signal the server to stop in 0.2 s;
    returns the number of sessions ended."""
    ended = runtime().sessions.end_all("server shutdown") if cleanup_sessions else 0
    master = int(os.environ.get("AGENTFLOW_MASTER_PID") or os.getpid())
    sig = signal.SIGINT if force else signal.SIGTERM
    log.warning("shutdown requested by %s: signalling pid %d with %s", request.remote_addr, master, sig.name)
    threading.Timer(0.2, os.kill, (master, sig)).start()
    return ended


@bp.post("/shutdown")
@idempotent("shutdown")
def shutdown():
    check_shutdown_allowed()
    body = load_body(_shutdown)
    ended = begin_shutdown(body["force"], body["cleanup_sessions"])
    return envelope({"sessions_cleaned": ended, "force": body["force"], "shutting_down": True}, 0,
                    "server is shutting down"), 200
