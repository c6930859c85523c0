"""Reading request bodies and writing envelopes."""
from __future__ import annotations

import json
import re
import time
import uuid

from flask import Response, current_app, g, request
from marshmallow import Schema, ValidationError

from ..runtime import Runtime
from ..runtime.errors import MalformedRequest


def runtime() -> Runtime:
    return current_app.extensions["agentflow"]


def request_id() -> str:
    """The client's ``X-Request-ID`` or one made for this request."""
    if "request_id" not in g:
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    return g.request_id


MAX_BODY_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _not_json_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _check_shape(body: dict, check_strings: bool) -> None:
    """Refuse what JSON parsing lets through but later steps cannot handle: nesting
    deeper than MAX_BODY_DEPTH (recursion in validation and auditing) and lone UTF-16
    surrogates (not storable, not encodable as UTF-8)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise MalformedRequest(f"request body nests deeper than {MAX_BODY_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if check_strings:
                for text in (key, item):
                    if isinstance(text, str):
                        try:
                            text.encode("utf-8")
                        except UnicodeEncodeError:
                            raise MalformedRequest("request body has a string with a lone UTF-16 surrogate "
                                                   f"({text.encode('utf-8', 'backslashreplace')[:60]!r})") from None
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))


def load_body(schema: Schema) -> dict:
    """Parse the JSON body and validate it; raises MalformedRequest naming the field."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, parse_constant=_not_json_constant) if raw.strip() else {}
    except (ValueError, RecursionError) as err:
        raise MalformedRequest(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise MalformedRequest(f"request body must be a JSON object, not {type(body).__name__}")
    _check_shape(body, check_strings=_SURROGATE_ESCAPE.search(raw) is not None)
    return _validated(schema, body)


def load_query(schema: Schema) -> dict:
    return _validated(schema, request.args.to_dict())


def _validated(schema: Schema, values: dict) -> dict:
    try:
        return schema.load(values)
    except ValidationError as err:
        raise MalformedRequest("invalid request: " + describe_errors(err.messages),
                               {"errors": err.messages}) from None


def describe_errors(messages, prefix: str = "") -> str:
    """Flatten marshmallow's nested messages into "field: problem; …"."""
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "body"
            parts.append(describe_errors(value, name))
        return "; ".join(parts)
    if isinstance(messages, list):
        texts = [m if isinstance(m, str) else describe_errors(m, prefix) for m in messages]
        text = " ".join(t.replace("Unknown field.", "unknown field.") for t in texts)
        return f"{prefix}: {text}" if prefix and all(isinstance(m, str) for m in messages) else text
    return f"{prefix}: {messages}"


def base_meta(**known) -> dict:
    started = g.get("started", time.perf_counter())
    return {"request_id": request_id(), "execution_time_ms": round((time.perf_counter() - started) * 1000, 3),
            **{k: v for k, v in known.items()}}


def envelope(data: dict | None = None, code: int = 0, message: str = "success", **meta) -> dict:
    return {"code": code, "message": message, "data": data if data is not None else {}, "meta": base_meta(**meta)}


def json_response(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str, ensure_ascii=False), status=status, mimetype="application/json")
