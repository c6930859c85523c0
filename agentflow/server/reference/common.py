"""The ``/api/v1`` blueprint and what its views share: answers, errors, name lookups."""
from __future__ import annotations

import functools
import logging
import uuid

from flask import Blueprint, g
from werkzeug.exceptions import HTTPException

from ...runtime.cluster import ClusterFull, ForwardCall
from ...runtime.errors import ApiError, ToolNotFound
from ..envelope import base_meta, json_response, runtime
from .protocol import reference_code

log = logging.getLogger(__name__)

bp = Blueprint("reference", __name__, url_prefix="/api/v1")
root_bp = Blueprint("reference_root", __name__)
"""Reference endpoints outside ``/api/v1`` (``GET /ready``)."""


def label(tool: str) -> None:
    """Name the operation (``session:create`` …) for the ``meta.tool`` of its answer,
    errors included."""
    g.reference_tool = tool


def answer(data: dict | None, tool: str, code: int = 0, message: str = "success", *,
           resource_type: str | None = "session", session_id: str | None = None, agentflow_code: int = 0) -> dict:
    """An answer in the reference's envelope (``code``, ``message``, ``data``, ``meta``
    with ``tool``, ``resource_type``, ``session_id``, ``trace_id``, ``execution_time_ms``),
    plus our ``request_id``, ``node_id`` and ``agentflow_code``."""
    meta = base_meta(tool=tool, resource_type=resource_type, session_id=session_id, trace_id=uuid.uuid4().hex,
                     agentflow_code=agentflow_code)
    return {"code": code, "message": message, "data": data if data is not None else {}, "meta": meta}


def error_answer(err: ApiError) -> tuple[dict, int]:
    """A protocol error as the reference answers one: its code, our message, and the
    HTTP status we give that error (the reference's client raises on any 4xx/5xx)."""
    body = answer(err.data, g.get("reference_tool") or "unknown", reference_code(err.code), err.message,
                  resource_type=None, agentflow_code=err.code)
    return body, err.http_status


def reference_errors(view):
    """Answer an ApiError raised by ``view`` in the reference's shape (inside
    :func:`~agentflow.server.middleware.idempotent`, so the stored answer has it too)."""

    @functools.wraps(view)
    def run(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except ApiError as err:
            return error_answer(err)

    return run


def resolve_action(action: str) -> str:
    """``action`` as the runtime knows it: our names and aliases as they are, and, as the
    reference does, a bare tool name (``list_databases``) that names exactly one tool."""
    registry = runtime().registry
    try:
        registry.resolve(action)
        return action
    except ToolNotFound:
        matches = [s.full_name for s in registry.specs.values() if s.name.lower() == str(action).strip().lower()]
        return matches[0] if len(matches) == 1 else action


def canonical(resource_type: str) -> str:
    """Our resource name for one of the reference's (``sql`` → ``text2sql``)."""
    return runtime().registry.canonical_resource(resource_type)


def _reference_error(err: ApiError):
    body, status = error_answer(err)
    response = json_response(body, status)
    if isinstance(err, ClusterFull):
        response.headers["Retry-After"] = str(err.retry_after)
    return response


@bp.errorhandler(ApiError)
def _api_error(err: ApiError):
    return _reference_error(err)


@bp.errorhandler(ForwardCall)
def _forward(moved: ForwardCall):
    """The call belongs to another node: relay it there (same path), as for our API."""
    from ..forward import relay

    try:
        return relay(moved)
    except ApiError as err:
        return _reference_error(err)


@bp.errorhandler(HTTPException)
def _http(err: HTTPException):
    body = answer({}, g.get("reference_tool") or "unknown", 4002, f"{err.code} {err.name}: {err.description}",
                  resource_type=None, agentflow_code=1000)
    return json_response(body, err.code or 400)


@bp.errorhandler(Exception)
def _unexpected(err: Exception):
    log.exception("unhandled error in %s", g.get("reference_tool") or "an /api/v1 request")
    body = answer({}, g.get("reference_tool") or "unknown", 5005, "internal error; see the server log",
                  resource_type=None, agentflow_code=5000)
    return json_response(body, 500)
