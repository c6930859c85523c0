"""POST /session/create, /session/destroy, /session/list, /session/refresh."""
from __future__ import annotations

from flask import Blueprint

from ..envelope import envelope, load_body, runtime
from ..forward import forwarded
from ..middleware import idempotent
from ..schemas import SessionCreateBody, SessionDestroyBody, SessionListBody, SessionRefreshBody

bp = Blueprint("sessions", __name__, url_prefix="/session")
_create, _destroy, _list, _refresh = SessionCreateBody(), SessionDestroyBody(), SessionListBody(), SessionRefreshBody()


@bp.post("/create")
@idempotent("session/create")
def create():
    body = load_body(_create)
    config = body["config"] if body["config"] is not None else body["session_config"]
    runtime().cluster.place(body["worker_id"], forwarded=forwarded())
    view, created = runtime().sessions.create(body["worker_id"], body["resource_type"], config, body["custom_name"])
    data = {**view, "session_status": view["status"], "created": created}
    message = "session created" if created else "session already exists"
    return envelope(data, 0, message, resource_type=view["resource_type"], session_id=view["session_id"]), 200


@bp.post("/destroy")
@idempotent("session/destroy")
def destroy():
    body = load_body(_destroy)
    view = runtime().sessions.destroy(body["worker_id"], body["resource_type"])
    return envelope(view, 0, "session destroyed", resource_type=view["resource_type"],
                    session_id=view["session_id"]), 200


@bp.post("/list")
@idempotent("session/list")
def list_sessions():
    body = load_body(_list)
    sessions = runtime().sessions.list(body["worker_id"])
    return envelope({"sessions": sessions, "total": len(sessions)}), 200


@bp.post("/refresh")
@idempotent("session/refresh")
def refresh():
    body = load_body(_refresh)
    sessions = runtime().sessions.refresh(body["worker_id"], body["resource_type"])
    return envelope({"sessions": sessions, "refreshed": len(sessions)}, 0, "refreshed",
                    resource_type=body["resource_type"]), 200
