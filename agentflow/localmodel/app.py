"""The OpenAI-compatible HTTP API of the local model (Flask).

``create_app(model)`` serves

* ``POST /v1/chat/completions`` — messages, ``tools`` / ``tool_choice``, ``temperature``,
  ``top_p``, ``max_tokens`` (or ``max_completion_tokens``), ``stop``, ``seed``,
  ``response_format``; the answer carries ``usage``. No streaming, ``n`` = 1.
* ``GET /v1/models`` and ``GET /v1/models/<id>``
* ``GET /health`` — the model, its load time and throughput so far (not OpenAI's).

Every path also works without the ``/v1`` prefix. Errors are OpenAI-shaped,
``{"error": {"message", "type", "param", "code"}}``, with the matching HTTP status: 400
for a bad request (including a prompt longer than the context window, code
``context_length_exceeded``), 401 for a missing or wrong key when one is set, 404 for an
unknown model or URL, 405, 413, and 500 (details only in the log).

This is the one Flask app outside ``agentflow/server/``: it is a server of its own (the
model's, not the sandbox's) and shares nothing with the sandbox app but the stack.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid

from flask import Blueprint, Flask, current_app, jsonify, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.exceptions import HTTPException

from ..version import __version__
from .prompt import RequestError

__all__ = ["ChatCompletionRequest", "create_app"]

log = logging.getLogger(__name__)

bp = Blueprint("openai_compat", __name__)


class ChatCompletionRequest(Schema):
    """The body of ``POST /v1/chat/completions``. Fields this server does not use (``user``,
    ``logprobs``, ``parallel_tool_calls``, ``metadata``, …) are ignored, as OpenAI-compatible
    servers do, so any client works unchanged."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True)
    messages = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))
    tools = fields.List(fields.Dict(), load_default=None, allow_none=True)
    tool_choice = fields.Raw(load_default=None, allow_none=True)
    temperature = fields.Float(load_default=None, allow_none=True, validate=validate.Range(0, 2))
    top_p = fields.Float(load_default=None, allow_none=True, validate=validate.Range(0, 1))
    max_tokens = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    stop = fields.Raw(load_default=None, allow_none=True)
    seed = fields.Integer(load_default=None, allow_none=True)
    n = fields.Integer(load_default=1, allow_none=True, validate=validate.Equal(1, error="only n=1 is supported"))
    stream = fields.Boolean(load_default=False, allow_none=True)
    response_format = fields.Dict(load_default=None, allow_none=True)
    frequency_penalty = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-2, 2))
    presence_penalty = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-2, 2))

    @validates_schema
    def _check(self, data, **kwargs):
        if data.get("stream"):
            raise ValidationError("streaming is not supported by the local model server; send stream=false",
                                  "stream")
        stop = data.get("stop")
        if stop is not None and not isinstance(stop, str) and not (
                isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4):
            raise ValidationError("stop must be a string or a list of up to 4 strings", "stop")


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None):
    resp = jsonify({"error": {"message": message, "type": type_, "param": param, "code": code}})
    resp.status_code = status
    return resp


@bp.before_app_request
def _authenticate():
    key = current_app.config.get("API_KEY")
    if not key or request.path.rstrip("/") in ("/health", ""):
        return None
    given = request.headers.get("Authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), key.encode()):
        return _error(401, "Incorrect API key provided" if token else "Missing API key (Authorization: Bearer ...)",
                      type_="invalid_request_error", code="invalid_api_key")
    return None


@bp.get("/health")
def health():
    model = current_app.config["MODEL"]
    return jsonify({"status": "ok", "version": __version__, **model.describe()})


def _model_card(model) -> dict:
    return {"id": model.name, "object": "model", "created": int(current_app.config["STARTED"]),
            "owned_by": "agentflow-local"}


@bp.get("/v1/models")
@bp.get("/models")
def list_models():
    return jsonify({"object": "list", "data": [_model_card(current_app.config["MODEL"])]})


@bp.get("/v1/models/<path:model_id>")
@bp.get("/models/<path:model_id>")
def get_model(model_id: str):
    model = current_app.config["MODEL"]
    if model_id != model.name:
        return _unknown_model(model_id, model.name)
    return jsonify(_model_card(model))


def _unknown_model(asked: str, served: str):
    return _error(404, f"The model '{asked}' does not exist; this server serves '{served}'", param="model",
                  code="model_not_found")


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions():
    model = current_app.config["MODEL"]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object (Content-Type: application/json)")
    try:
        req = ChatCompletionRequest().load(body)
    except ValidationError as err:
        field, problems = next(iter(sorted(err.normalized_messages().items())))
        text = problems if isinstance(problems, str) else "; ".join(map(str, _flatten(problems)))
        return _error(400, f"Invalid value for '{field}': {text}", param=str(field))
    if req["model"] != model.name:
        return _unknown_model(req["model"], model.name)
    stop = req["stop"]
    started = time.time()
    done = model.complete(
        req["messages"], tools=req["tools"], tool_choice=req["tool_choice"], temperature=req["temperature"],
        top_p=req["top_p"], max_tokens=req["max_completion_tokens"] or req["max_tokens"],
        stop=[stop] if isinstance(stop, str) else stop, seed=req["seed"], response_format=req["response_format"],
        frequency_penalty=req["frequency_penalty"] or 0.0, presence_penalty=req["presence_penalty"] or 0.0)
    request_id = request.headers.get("X-Request-ID") or f"req_{uuid.uuid4().hex}"
    resp = jsonify({
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(started),
        "model": model.name,
        "system_fingerprint": f"agentflow-local-{__version__}",
        "choices": [{"index": 0, "message": done.message, "finish_reason": done.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                  "total_tokens": done.prompt_tokens + done.completion_tokens},
    })
    resp.headers["x-request-id"] = request_id
    resp.headers["openai-processing-ms"] = str(int((time.time() - started) * 1000))
    return resp


def _flatten(problems) -> list:
    if isinstance(problems, dict):
        return [f"{k}: {v}" for k, vs in problems.items() for v in _flatten(vs)]
    if isinstance(problems, list):
        return [p for item in problems for p in _flatten(item)]
    return [problems]


def _handle_request_error(err: RequestError):
    return _error(400, err.message, param=err.param, code=err.code)


def _handle_http_error(err: HTTPException):
    if err.code == 404:
        return _error(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")
    if err.code == 405:
        return _error(405, f"Method {request.method} is not allowed on {request.path}", code="method_not_allowed")
    if err.code == 413:
        return _error(413, "The request body is too large", code="request_too_large")
    return _error(err.code or 500, err.description or err.name,
                  type_="invalid_request_error" if (err.code or 500) < 500 else "server_error")


def _handle_unexpected(err: Exception):
    log.exception("chat request failed: %s", err)
    return _error(500, "The local model server had an internal error; see its log", type_="server_error",
                  code="internal_error")


def create_app(model, api_key: str | None = None, max_request_bytes: int = 16 * 1024 * 1024) -> Flask:
    """The app serving ``model`` (a :class:`~agentflow.localmodel.engine.LocalModel` or
    anything with its ``name``, ``complete`` and ``describe``).

    Args:
        model: The model to serve.
        api_key: When set, every endpoint but ``/health`` needs ``Authorization: Bearer <key>``.
        max_request_bytes: Largest request body accepted (413 above it).
    """
    app = Flask("agentflow.localmodel")
    app.config.update(MODEL=model, API_KEY=api_key or None, STARTED=time.time(),
                      MAX_CONTENT_LENGTH=max_request_bytes)
    app.json.sort_keys = False
    app.register_blueprint(bp)
    app.register_error_handler(RequestError, _handle_request_error)
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(Exception, _handle_unexpected)
    return app
