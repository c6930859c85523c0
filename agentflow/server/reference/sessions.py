"""Sessions in the reference protocol: ``session/*``, ``lifecycle/*``,
``worker/disconnect`` and ``init/*``, on the runtime's session manager."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ...config import REPO_DIR
from ...runtime import default_roots
from ...runtime.cluster import NodeLost
from ...runtime.errors import ApiError, ParameterError, SessionError
from ...runtime.executor import mask_secrets
from ...tools.base import ParamError, resolve_path
from ..envelope import load_body, runtime
from ..forward import forwarded
from ..middleware import idempotent
from .bodies import (InitBatchBody, InitFromConfigBody, InitResourceBody, SessionCreateBody, SessionDestroyBody,
                     SessionRefreshBody, WorkerBody)
from .common import answer, bp, canonical, label, reference_errors
from .protocol import (ALL_REQUESTS_FAILED, INVALID_INPUT, INVALID_REQUEST_FORMAT, PARTIAL_FAILURE,
                       RESOURCE_NOT_INITIALIZED, UNEXPECTED_ERROR, mirrored, session_entry)

_worker, _create, _destroy, _refresh = WorkerBody(), SessionCreateBody(), SessionDestroyBody(), SessionRefreshBody()
_init, _init_batch, _from_config = InitResourceBody(), InitBatchBody(), InitFromConfigBody()


def _open(worker_id: str, asked: str, config: dict | None, custom_name: str | None = None) -> dict:
    """Create (or find) the worker's session on ``asked`` (a reference resource name is
    accepted); returns our session view with ``created``."""
    rt = runtime()
    view, created = rt.sessions.create(worker_id, canonical(asked), config or {}, custom_name)
    return {**view, "created": created}


def _not_found(asked: str, tool: str, err: SessionError) -> tuple[dict, int]:
    message = err.message if isinstance(err, NodeLost) else f"No session found for {asked}"
    return answer({"resource_type": asked, "details": err.message}, tool, RESOURCE_NOT_INITIALIZED, message,
                  agentflow_code=err.code), 404


# -- session/* -------------------------------------------------------------------------
@bp.post("/session/create")
@idempotent("v1/session/create")
@reference_errors
def session_create():
    label("session:create")
    body = load_body(_create)
    asked = body["resource_type"]
    config = body["session_config"] if body["session_config"] is not None else body["config"]
    runtime().cluster.place(body["worker_id"], forwarded=forwarded())
    try:
        view = _open(body["worker_id"], asked, config, body["custom_name"])
    except SessionError as err:
        data = {"session_id": None, "session_name": None, "resource_type": asked, "session_status": "error",
                "error": err.message}
        return answer(data, "session:create", RESOURCE_NOT_INITIALIZED, "Session creation failed",
                      agentflow_code=err.code), 500
    data = {"session_id": view["session_id"], "session_name": view["session_name"], "resource_type": asked,
            "session_status": view["status"], "error": None}
    if not view["created"]:
        data["status"] = "exists"
    return mirrored(answer(data, "session:create", session_id=view["session_id"])), 200


@bp.post("/session/destroy")
@idempotent("v1/session/destroy")
@reference_errors
def session_destroy():
    label("session:destroy")
    body = load_body(_destroy)
    asked = body["resource_type"]
    try:
        view = runtime().sessions.destroy(body["worker_id"], canonical(asked))
    except SessionError as err:
        return _not_found(asked, "session:destroy", err)
    data = {"message": f"Session destroyed for {asked}", "session_id": view["session_id"],
            "session_name": view["session_name"], "resource_type": asked}
    return mirrored(answer(data, "session:destroy", session_id=view["session_id"])), 200


@bp.post("/session/list")
@idempotent("v1/session/list")
@reference_errors
def session_list():
    label("session:list")
    body = load_body(_worker)
    sessions = [session_entry(v) for v in runtime().sessions.list(body["worker_id"])]
    return answer({"worker_id": body["worker_id"], "sessions": sessions, "count": len(sessions)}, "session:list"), 200


@bp.post("/session/refresh")
@idempotent("v1/session/refresh")
@reference_errors
def session_refresh():
    label("session:refresh")
    body = load_body(_refresh)
    worker, asked = body["worker_id"], body["resource_type"]
    if asked:
        try:
            (view,) = runtime().sessions.refresh(worker, canonical(asked))
        except SessionError as err:
            return _not_found(asked, "session:refresh", err)
        data = {"message": f"Session refreshed for {asked}", "resource_type": asked,
                "session_id": view["session_id"], "expires_at": view["expires_at"]}
        return mirrored(answer(data, "session:refresh", session_id=view["session_id"])), 200
    views = runtime().sessions.refresh(worker)
    details = {v["resource_type"]: {"status": "refreshed", "expires_at": v["expires_at"]} for v in views}
    data = {"message": f"Refreshed {len(views)} sessions", "worker_id": worker, "refreshed_count": len(views),
            "details": details}
    return mirrored(answer(data, "session:refresh")), 200


# -- lifecycle/*, worker/disconnect ------------------------------------------------------
@bp.post("/lifecycle/heartbeat")
@idempotent("v1/lifecycle/heartbeat")
@reference_errors
def heartbeat():
    label("session:heartbeat")
    worker = load_body(_worker)["worker_id"]
    active = [v["resource_type"] for v in runtime().sessions.list(worker)]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    return answer({"worker_id": worker, "active_sessions": active, "timestamp": now}, "session:heartbeat"), 200


@bp.post("/lifecycle/status")
@idempotent("v1/lifecycle/status")
@reference_errors
def status():
    label("session:status")
    worker = load_body(_worker)["worker_id"]
    rt = runtime()
    views = rt.sessions.list(worker)
    sessions = {v["resource_type"]: {"session_id": v["session_id"], "status": v["status"],
                                     "created_at": v["created_at"], "last_activity": v["last_activity"]}
                for v in views}
    data = {"worker_id": worker, "active_resources": list(sessions), "sessions": sessions,
            "tools_available": len(rt.registry.list_specs())}
    return answer(data, "session:status"), 200


@bp.post("/worker/disconnect")
@idempotent("v1/worker/disconnect")
@reference_errors
def worker_disconnect():
    label("session:disconnect")
    worker = load_body(_worker)["worker_id"]
    rt = runtime()
    if not forwarded():
        rt.cluster.go_home(worker)  # a worker's sessions are on one node: end them there
    cleaned = 0
    for view in rt.sessions.list(worker):
        try:
            rt.sessions.destroy(worker, view["resource_type"])
            cleaned += 1
        except SessionError:  # ended meanwhile (expired, or by another request)
            continue
    return answer({"worker_id": worker, "sessions_cleaned": cleaned}, "session:disconnect"), 200


# -- init/* ------------------------------------------------------------------------------
@bp.post("/init/resource")
@idempotent("v1/init/resource")
@reference_errors
def init_resource():
    label("init:resource")
    body = load_body(_init)
    asked = body["resource_type"]
    runtime().cluster.place(body["worker_id"], forwarded=forwarded())
    try:
        view = _open(body["worker_id"], asked, body["init_config"])
    except SessionError as err:
        data = {"session_id": None, "resource_type": asked, "session_status": "error", "error": err.message}
        return answer(data, "init:resource", RESOURCE_NOT_INITIALIZED, "Resource initialization failed",
                      agentflow_code=err.code), 500
    data = {"session_id": view["session_id"], "resource_type": asked, "session_status": view["status"],
            "error": None}
    return answer(data, "init:resource", session_id=view["session_id"]), 200


@bp.post("/init/batch")
@idempotent("v1/init/batch")
@reference_errors
def init_batch():
    label("init:batch")
    body = load_body(_init_batch)
    worker = body["worker_id"]
    runtime().cluster.place(worker, forwarded=forwarded())
    results, codes = {}, []
    for asked, config in body["resource_configs"].items():
        config = config or {}
        content = config.get("content", config) if isinstance(config.get("content", config), dict) else {}
        try:
            view = _open(worker, asked, content)
            results[asked] = {"status": "success", "session_id": view["session_id"],
                              "session_status": view["status"], "error": None}
        except ApiError as err:  # this resource failed; the others still start
            codes.append(err.code)
            results[asked] = {"status": "error", "session_id": None, "session_status": "error",
                              "error": err.message, "message": err.message}
    ok = sum(1 for r in results.values() if r["status"] == "success")
    data = {"worker_id": worker, "results": results, "total": len(results), "success_count": ok}
    if ok == len(results):
        return answer(data, "init:batch"), 200
    if ok == 0:
        return answer(data, "init:batch", ALL_REQUESTS_FAILED, "All resources failed to initialize",
                      agentflow_code=codes[0]), 500
    return answer(data, "init:batch", PARTIAL_FAILURE, f"{len(results) - ok} out of {len(results)} resources failed",
                  agentflow_code=codes[0]), 207


def _config_roots() -> list[Path]:
    rt = runtime()
    return [*default_roots(rt.config), (rt.config.project_dir / "configs").resolve(), (REPO_DIR / "configs").resolve()]


@bp.post("/init/from-config")
@idempotent("v1/init/from-config")
@reference_errors
def init_from_config():
    label("init:from_config")
    body = load_body(_from_config)
    asked = body["config_path"]
    try:
        path = resolve_path(asked, _config_roots(), "config_path", base=runtime().config.project_dir)
    except ParamError as err:
        if "does not exist" in str(err):
            return answer({"config_path": asked}, "init:from_config", INVALID_REQUEST_FORMAT,
                          f"Config file not found: {asked}", agentflow_code=ParameterError.code), 404
        return answer({"config_path": asked}, "init:from_config", INVALID_INPUT,
                      f"{err} (config files are read from the server's roots and configs/ folders only)",
                      agentflow_code=ParameterError.code), 400
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("the top level is not a JSON object")
    except (OSError, UnicodeError, ValueError) as err:
        return answer({"config_path": asked}, "init:from_config", UNEXPECTED_ERROR,
                      f"cannot read config file {asked}: {err}", agentflow_code=1002), 500
    for key, value in (body["override_params"] or {}).items():
        if key in config:  # as the reference does: only keys the file has, objects merged one level
            if isinstance(config[key], dict) and isinstance(value, dict):
                config[key].update(value)
            else:
                config[key] = value
    # secrets written in the file are not sent back (keys named like *api_key*, *token*)
    return answer({"config_loaded": asked, "config": mask_secrets(config)}, "init:from_config"), 200
