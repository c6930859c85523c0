"""The AgentFlow reference's wire shapes, as pure functions of our own (no Flask, no I/O).

Everything the ``/api/v1`` views send is built here from what the runtime answers, so
the runtime and the tools keep one shape and this module is the only place that knows
the other one. What the reference's callers read, and so what is built:

- **codes**: the reference numbers its codes 0 (success), 4xxx (the caller's input) and
  5xxx (execution); :func:`reference_code` maps ours onto them and every answer keeps
  ours in ``meta.agentflow_code``. Codes with no counterpart there (1004 unauthorized,
  1005 still running) are sent as they are.
- **HTTP status** of a tool call: 200 for success, 400 for a 4xxx code, 500 otherwise
  (:func:`call_status`); its client raises on any status of 400 or more.
- **tools**: ``{name, full_name, resource_type, stateless, description}`` with the
  parameters as a list of ``{name, type, description, required, array_type?, enum?}``
  (:func:`parameter_list`), the format its ``convert_tool_schema_to_openai`` reads.
- **data** of a call is ours, except ``text2sql:list_databases``, whose ``databases`` the
  reference's formatter joins as names (:func:`reference_data`).
"""
from __future__ import annotations

import copy
from typing import Any

SUCCESS = 0
INVALID_INPUT = 4000
INVALID_REQUEST_FORMAT = 4002
RESOURCE_NOT_INITIALIZED = 4007
EXECUTION_ERROR = 5000
UNEXPECTED_ERROR = 5005
TIMEOUT_ERROR = 5006
ALL_REQUESTS_FAILED = 5009
PARTIAL_FAILURE = 5010
BACKEND_NOT_INITIALIZED = 5011

_CODES = {
    0: SUCCESS,
    1000: INVALID_REQUEST_FORMAT,  # malformed request
    1001: INVALID_REQUEST_FORMAT,  # tool not found (the reference reports it so too)
    1002: INVALID_INPUT,  # parameter error
    1003: RESOURCE_NOT_INITIALIZED,  # session error
    2001: EXECUTION_ERROR,  # the tool ran and failed
    2002: TIMEOUT_ERROR,
    2003: BACKEND_NOT_INITIALIZED,
    2004: EXECUTION_ERROR,  # interrupted: the outcome is unknown
    5000: UNEXPECTED_ERROR,
}

_ENVELOPE_KEYS = ("code", "message", "data", "meta")


def reference_code(code: int) -> int:
    """The reference's code for one of ours (codes it has no counterpart for are kept)."""
    return _CODES.get(code, code)


def call_status(ref_code: int, fallback: int = 500) -> int:
    """The HTTP status the reference answers a tool call with: 200, 400 for the caller's
    errors (4xxx), 500 for the others; ``fallback`` for codes it does not have."""
    if ref_code == SUCCESS:
        return 200
    if 4000 <= ref_code < 5000:
        return 400
    if ref_code >= 5000:
        return 500
    return fallback


def reference_data(tool: str | None, data: Any) -> Any:
    """A call's ``data`` as the reference's callers read it: ours, except that
    ``text2sql:list_databases`` lists database *names* in ``databases`` (ours are
    objects, kept in ``database_details``)."""
    if tool == "text2sql:list_databases" and isinstance(data, dict) and isinstance(data.get("databases"), list):
        details = data["databases"]
        names = [d.get("db_id") if isinstance(d, dict) else d for d in details]
        return {**data, "databases": names, "database_details": details}
    return data


def reference_envelope(envelope: dict) -> dict:
    """One of our call envelopes in the reference's shape: its code, the reference
    ``data`` (:func:`reference_data`), and ``meta`` with ours kept in ``agentflow_code``."""
    meta = dict(envelope.get("meta") or {})
    if "agentflow_code" in meta:  # converted already (e.g. a batch item replayed from its record)
        return envelope
    code = envelope["code"]
    meta["agentflow_code"] = code
    return {"code": reference_code(code), "message": envelope["message"],
            "data": reference_data(meta.get("tool"), envelope.get("data")), "meta": meta}


def mirrored(body: dict, keys: tuple[str, ...] | None = None) -> dict:
    """``body`` with the keys of its ``data`` copied to the top level too (those that do
    not clash with the envelope's own): the reference's client documents reading some
    answers there (``result['expires_at']``, ``result['session_id']``), its server sends
    them in ``data``."""
    data = body.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if key not in _ENVELOPE_KEYS and (keys is None or key in keys):
                body.setdefault(key, value)
    return body


# -- tools ---------------------------------------------------------------------------
_SIMPLE_TYPES = ("string", "integer", "number", "boolean", "object", "array")


def _pick_type(schema: dict) -> tuple[str, dict]:
    """The one type the reference's list format can say for a JSON Schema property (an
    array wins, as a list is what a model should send), and the schema giving it."""
    variants = [schema] + [v for v in schema.get("oneOf", []) + schema.get("anyOf", []) if isinstance(v, dict)]
    found: list[tuple[str, dict]] = []
    for variant in variants:
        kind = variant.get("type")
        for name in kind if isinstance(kind, list) else [kind]:
            if name in _SIMPLE_TYPES:
                found.append((name, variant))
    for name, variant in found:
        if name == "array":
            return name, variant
    return found[0] if found else ("string", schema)


def parameter_list(parameters: dict) -> list[dict]:
    """A tool's JSON Schema as the reference's parameter list."""
    required = set(parameters.get("required") or [])
    out = []
    for name, prop in (parameters.get("properties") or {}).items():
        kind, variant = _pick_type(prop)
        entry: dict = {"name": name, "type": kind, "description": prop.get("description", ""),
                       "required": name in required}
        if kind == "array":
            items = variant.get("items") if isinstance(variant.get("items"), dict) else {}
            item_type, _ = _pick_type(items) if items else ("string", {})
            entry["array_type"] = item_type
        enum = prop.get("enum") or variant.get("enum")
        if enum:
            entry["enum"] = list(enum)
        out.append(entry)
    return out


def tool_entry(spec, with_parameters: bool = True) -> dict:
    """One tool as the reference lists it (``spec``: a :class:`~agentflow.tools.base.ToolSpec`);
    ``parameters`` in its list format, ``input_schema`` the JSON Schema."""
    entry = {"name": spec.name, "full_name": spec.full_name, "resource_type": spec.resource_type,
             "stateless": not spec.needs_session, "description": spec.description}
    if with_parameters:
        entry["parameters"] = parameter_list(spec.parameters)
        entry["input_schema"] = copy.deepcopy(spec.parameters)
    return entry


# -- sessions ------------------------------------------------------------------------
def session_entry(view: dict, resource_type: str | None = None) -> dict:
    """One of our session views as the reference's ``session/list`` entry."""
    return {"resource_type": resource_type or view["resource_type"], "session_id": view["session_id"],
            "session_name": view["session_name"], "status": view["status"], "auto_created": False,
            "created_at": view["created_at"], "last_activity": view["last_activity"],
            "expires_at": view["expires_at"]}


# -- warmup --------------------------------------------------------------------------
def warmup_summary(backends: dict) -> dict:
    """``{total, warmed_up, pending}`` of a warmup status (``{name: {warmed_up, …}}``)."""
    warmed = sum(1 for entry in backends.values() if entry.get("warmed_up"))
    return {"total": len(backends), "warmed_up": warmed, "pending": len(backends) - warmed}


def warmup_answer(results: dict, status: dict) -> dict:
    """The reference's answer to ``POST warmup``: ``status`` (success or partial_error),
    ``results`` ({name: bool}), ``summary`` and, when some failed, ``errors``; our own
    per-backend results in ``details``."""
    ok = {name: bool(r.get("success")) for name, r in results.items()}
    errors = {name: r.get("error") for name, r in results.items() if not r.get("success")}
    answer = {"status": "success" if all(ok.values()) else "partial_error", "results": ok,
              "summary": warmup_summary(status), "details": results}
    if errors:
        answer["errors"] = errors
    return answer


__all__ = [
    "call_status", "mirrored", "parameter_list", "reference_code", "reference_data", "reference_envelope",
    "session_entry", "tool_entry", "warmup_answer", "warmup_summary",
]
