"""Reading request bodies and writing envelopes."""
from __future__ import annotations

import json
import re
import time
import uuid

import orjson
from flask import Response, current_app, g, request
from marshmallow import Schema, ValidationError

from ..runtime import Runtime
from ..runtime.jsontext import dumps_bytes
from .schemas import ExecuteBody
from ..runtime.errors import ApiError, MalformedRequest, ParameterError


def runtime() -> Runtime:
    return current_app.extensions["agentflow"]


MAX_REQUEST_ID = 128
"""Longest ``X-Request-ID`` accepted; batch items store ``<id>#<index>`` in 200-character
columns. Longer ids are refused, never cut: two ids cut to one would replay each other."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+/=-]+")
REQUEST_ID_CHARS = "letters, digits and . _ : @ + / = -"


def request_id() -> str:
    """The client's ``X-Request-ID`` (checked by :func:`check_request_id` before any
    view runs) or one made for this request."""
    if "request_id" not in g:
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    return g.request_id


def check_request_id() -> None:
    """Refuse an ``X-Request-ID`` that is too long or has other characters (1000)."""
    given = request.headers.get("X-Request-ID")
    if given is None or request_id_ok(given):
        return
    g.request_id = uuid.uuid4().hex  # the refusal's meta must not echo the bad id
    raise MalformedRequest(f"header X-Request-ID must be 1-{MAX_REQUEST_ID} characters of {REQUEST_ID_CHARS}, "
                           f"got {len(given)} character(s)", {"header": "X-Request-ID"})


def request_id_ok(given: str) -> bool:
    return len(given) <= MAX_REQUEST_ID and _REQUEST_ID.fullmatch(given) is not None


MAX_BODY_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have."""
MAX_STRING_BYTES = 1 << 20
"""Longest string (UTF-8 bytes) anywhere in a request body: a ``bash:run`` command, the
``code`` of ``code:run``, any other parameter or field."""
# an escaped lone surrogate, or one in raw bytes (json.loads decodes with surrogatepass)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")
_NUL_ESCAPE = b"\\u0000"  # the only way a JSON text can hold a NUL inside a string


def _not_json_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


class _StringChecks:
    """Which string checks a body needs; each is skipped when the raw text shows it
    cannot fail, so ordinary bodies pay nothing."""

    def __init__(self, raw: bytes):
        self.surrogates = _SURROGATE_ESCAPE.search(raw) is not None
        self.nul = _NUL_ESCAPE in raw
        # a JSON string is never shorter in the raw text than in UTF-8
        self.size = len(raw) > MAX_STRING_BYTES

    def __bool__(self) -> bool:
        return self.surrogates or self.nul or self.size


def _field_name(path: tuple) -> str:
    name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
    return name.replace("\0", "\\0")  # a key may hold the NUL being reported


def _params_start(path: tuple) -> int | None:
    """Where the tool parameter's own name starts in ``path`` (None: not a parameter):
    ``params.…`` of /execute, ``actions[i].params.…`` of a batch."""
    if path[:1] == ("params",):
        return 1
    if path[:1] == ("actions",) and path[2:3] == ("params",):
        return 3
    return None


def _string_problem(text: str, checks: _StringChecks) -> str | None:
    if checks.nul and "\0" in text:
        return "contains a NUL byte"
    # 4 bytes per character at most: only long texts need encoding to know
    if checks.size and len(text) * 4 > MAX_STRING_BYTES and len(text.encode("utf-8")) > MAX_STRING_BYTES:
        return f"is longer than the limit of {MAX_STRING_BYTES} bytes (UTF-8)"
    return None


def _check_string(text: str, path: tuple, checks: _StringChecks) -> None:
    if checks.surrogates:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRequest("request body has a string with a lone UTF-16 surrogate "
                                   f"({text.encode('utf-8', 'backslashreplace')[:60]!r})") from None
    problem = _string_problem(text, checks)
    if problem is None:
        return
    name = _field_name(path)
    start = _params_start(path)
    if start is not None and len(path) > start:
        # a tool parameter: a parameter error (1002), like any other bad parameter value
        param = _field_name(path[start:])
        where = f"{_field_name(path[:start - 1])}: " if start > 1 else ""
        raise ParameterError(f"{where}parameter '{param}' {problem}", {"param": param, "field": name})
    raise MalformedRequest(f"invalid request: {name or 'body'}: {problem}", {"field": name})


def _check_shape(body: dict, checks: _StringChecks) -> None:
    """Refuse what JSON parsing lets through but later steps cannot handle: nesting
    deeper than MAX_BODY_DEPTH (recursion in validation and auditing), lone UTF-16
    surrogates (not storable, not encodable as UTF-8), NUL bytes (no path, command or
    database text can hold one) and strings over MAX_STRING_BYTES."""
    stack = [(body, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise MalformedRequest(f"request body nests deeper than {MAX_BODY_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if checks:
                for text in (key, item):
                    if isinstance(text, str):
                        _check_string(text, path + (key,), checks)
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1, path + (key,) if checks else path))


def load_body(schema: Schema) -> dict:
    """Parse the JSON body and validate it; raises MalformedRequest naming the field."""
    return parse_body(request.get_data(cache=True), schema)


def parse_plain_execute(raw: bytes) -> dict | None:
    """A POST /execute body loaded the fast way when it is a plain one
    (:meth:`ExecuteBody.load_plain`), after the same shape checks; None when it is not
    (then :func:`parse_body` judges it, with the full messages)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    try:
        _check_shape(body, _StringChecks(raw))
    except ApiError:
        return None
    return ExecuteBody.load_plain(body)


def parse_body(raw: bytes, schema: Schema) -> dict:
    """:func:`load_body` of a body already read."""
    try:
        body = json.loads(raw, parse_constant=_not_json_constant) if raw.strip() else {}
    except (ValueError, RecursionError) as err:
        raise MalformedRequest(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise MalformedRequest(f"request body must be a JSON object, not {type(body).__name__}")
    _check_shape(body, _StringChecks(raw))
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
    return meta_for(request_id(), g.get("started", time.perf_counter()), runtime().cluster.node_id, **known)


def meta_for(request_id: str, started: float, node_id: str | None, **known) -> dict:
    """The ``meta`` of an envelope the server builds itself (not a tool call's)."""
    return {"request_id": request_id, "execution_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "node_id": node_id, **known}


def envelope(data: dict | None = None, code: int = 0, message: str = "success", **meta) -> dict:
    return {"code": code, "message": message, "data": data if data is not None else {}, "meta": base_meta(**meta)}


def error_envelope(err: ApiError, meta: dict) -> dict:
    return {"code": err.code, "message": err.message, "data": err.data if err.data is not None else {}, "meta": meta}


def json_bytes(body: dict) -> bytes:
    """A response body as sent."""
    return dumps_bytes(body)


def json_response(body: dict, status: int = 200) -> Response:
    return Response(json_bytes(body), status=status, mimetype="application/json")
