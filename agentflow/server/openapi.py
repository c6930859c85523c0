"""/openapi.json, generated from the marshmallow schemas with apispec."""
from __future__ import annotations

import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from ..version import __version__
from . import schemas
from .envelope import MAX_REQUEST_ID

_ERRORS = {"400": "Malformed request (1000) or parameter error (1002)", "401": "Unauthorized (1004)",
           "404": "Tool not found (1001)", "409": "Session error (1003)", "500": "Internal error (5000)",
           "503": "Backend not ready (2003)"}
# Refusals every operation may answer before its view runs (agentflow.server.guard).
_GUARD_ERRORS = {"400": "Malformed request (1000): e.g. a bad X-Request-ID",
                 "403": "Origin of another site (1000)", "421": "Host that is not this server's (1000)"}
_BODY_ERRORS = {"413": "Body larger than max_request_bytes (1000)", "415": "Body not declared JSON (1000)"}

_POSTS = {
    "/execute": ("ExecuteBody", "Run one tool call", ["400", "401", "404", "409", "500", "503"]),
    "/execute/batch": ("BatchBody", "Run several tool calls", ["400", "401", "500"]),
    "/session/create": ("SessionCreateBody", "Create (or return) the worker's session on a resource",
                        ["400", "401", "409", "500", "503"]),
    "/session/destroy": ("SessionDestroyBody", "End the worker's session on a resource", ["400", "401", "409", "500"]),
    "/session/list": ("SessionListBody", "List the worker's live sessions", ["400", "401", "500"]),
    "/session/refresh": ("SessionRefreshBody", "Extend the worker's sessions", ["400", "401", "409", "500"]),
    "/warmup": ("WarmupBody", "Warm backends (all when none given)", ["400", "401", "500", "503"]),
    "/shutdown": ("ShutdownBody", "Stop the server", ["400", "401", "500"]),
}
# Every field of these bodies is optional: the body itself may be left out.
_OPTIONAL_BODIES = {"WarmupBody", "ShutdownBody"}


def _build() -> dict:
    spec = APISpec(title="AgentFlow sandbox server", version=__version__, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Tools for LLM agents behind one HTTP API; every call audited in SQL."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in schemas.BODIES.items():
        spec.components.schema(name, schema=schema)
    spec.components.schema("Envelope", schema=schemas.Envelope)
    spec.components.schema("Health", schema=schemas.Health)
    env = {"content": {"application/json": {"schema": "Envelope"}}}
    rid_schema = {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID, "pattern": r"^[A-Za-z0-9._:@+/=-]+$"}
    header = {"name": "X-Request-ID", "in": "header", "required": False, "schema": rid_schema,
              "description": "Idempotency key: a retried request with the same id is answered, not rerun"}
    # /api/v1 is not described here: it speaks the AgentFlow reference's protocol, not this
    # envelope (agentflow.server.reference, docs/reference-compat.md)
    for path, (body, summary, errors) in _POSTS.items():
        responses = {"200": {"description": "Envelope", **env}}
        responses.update({c: {"description": _ERRORS[c], **env} for c in errors})
        spec.path(path=path, operations={"post": {
            "summary": summary, "parameters": [header],
            "requestBody": {"required": body not in _OPTIONAL_BODIES, "content": {"application/json": {"schema": body}}},
            "responses": responses}})
    spec.path(path="/tools", operations={"get": {
        "summary": "List tools", "parameters": [
            {"name": "include_hidden", "in": "query", "schema": {"type": "boolean"}},
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["openai", "default"]}}],
        "responses": {"200": {"description": "Envelope with data.tools", **env},
                      "400": {"description": _ERRORS["400"], **env}, "401": {"description": _ERRORS["401"], **env}}}})
    spec.path(path="/warmup/status", operations={"get": {
        "summary": "Warmup state of every backend",
        "responses": {"200": {"description": "Envelope with data.backends", **env},
                      "401": {"description": _ERRORS["401"], **env}}}})
    spec.path(path="/health", operations={"get": {
        "summary": "Liveness", "security": [],
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": "Health"}}}}}})
    spec.path(path="/openapi.json", operations={"get": {
        "summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document"}}}})
    doc = spec.to_dict()
    doc["security"] = [{"bearer": []}, {}]
    _add_guard_responses(doc)
    return doc


def _add_guard_responses(doc: dict) -> None:
    env = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
    for operations in doc["paths"].values():
        for method, operation in operations.items():
            extra = {**_GUARD_ERRORS, **(_BODY_ERRORS if method == "post" else {})}
            for status, text in extra.items():
                operation["responses"].setdefault(status, {"description": text, **env})


@functools.lru_cache(maxsize=1)
def _cached() -> dict:
    return _build()


def spec_dict(app: Flask) -> dict:
    return _cached()
