"""Tools, warmup, shutdown and readiness in the reference protocol. These answers are
plain JSON objects (not the envelope), as the reference's server sends them."""
from __future__ import annotations

from flask import g
from sqlalchemy import distinct, func, select

from ...db import utcnow
from ...db.models import SESSION_ACTIVE, SandboxSession
from ...runtime.errors import ToolNotFound
from ..api.admin import begin_shutdown, check_shutdown_allowed
from ..api.warmup import backend_status
from ..envelope import json_response, load_body, load_query, runtime
from ..middleware import idempotent
from .bodies import ShutdownBody, ToolsQuery, WarmupBody
from .common import bp, canonical, label, reference_errors, resolve_action, root_bp
from .protocol import tool_entry, warmup_answer, warmup_summary

_tools_query, _warmup, _shutdown = ToolsQuery(), WarmupBody(), ShutdownBody()


@bp.get("/tools")
def list_tools():
    label("tools:list")
    query = load_query(_tools_query)
    tools = [tool_entry(s) for s in runtime().registry.list_specs(include_hidden=query["include_hidden"])]
    return json_response({"tools": tools, "count": len(tools)})


@bp.get("/tools/<name>/schema")
def tool_schema(name: str):
    label("tools:schema")
    try:
        spec = runtime().registry.resolve(resolve_action(name))
    except ToolNotFound:
        return json_response({"status": "error", "message": f"Tool not found: {name}"}, 404)
    return json_response(tool_entry(spec))


@bp.post("/warmup")
@idempotent("v1/warmup")
@reference_errors
def warmup():
    label("warmup")
    body = load_body(_warmup)
    rt = runtime()
    asked = body["backends"] if body["backends"] else list(rt.registry.backends)
    known = {name: canonical(name) for name in asked if canonical(name) in rt.registry.backends}
    done = rt.warmup(sorted(set(known.values()))) if known else {}
    results = {}
    for name in asked:
        if name in known:
            results[name] = done[known[name]]
        else:
            results[name] = {"success": False, "warmed_up": False,
                             "error": f"Backend not found: {name}. Available backends: {sorted(rt.registry.backends)}"}
    return warmup_answer(results, backend_status()), 200


@bp.get("/warmup/status")
def warmup_status():
    label("warmup:status")
    backends = backend_status()
    return json_response({"backends": backends, "summary": warmup_summary(backends)})


@bp.post("/server/shutdown")
@idempotent("v1/server/shutdown")
@reference_errors
def shutdown():
    label("server:shutdown")
    check_shutdown_allowed()
    body = load_body(_shutdown)
    cleaned = begin_shutdown(body["force"], body["cleanup_sessions"])
    return {"status": "success", "message": "Server shutdown initiated", "sessions_cleaned": cleaned}, 200


@root_bp.get("/ready")
def ready():
    g.reference_tool = "ready"
    rt = runtime()
    with rt.read() as s:
        live = (SandboxSession.status == SESSION_ACTIVE) & (SandboxSession.expires_at > utcnow())
        workers, sessions = s.execute(select(func.count(distinct(SandboxSession.worker_id)), func.count())
                                      .where(live)).one()
    return json_response({"status": "ready", "tools_count": len(rt.registry.list_specs()),
                          "active_workers": workers, "total_sessions": sessions})

