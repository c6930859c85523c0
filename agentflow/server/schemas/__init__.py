"""Request and response bodies: the contract of the HTTP API (and of /openapi.json)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ...runtime.sessions import MAX_CUSTOM_NAME, MAX_RESOURCE_TYPE, MAX_WORKER_ID, NAME_CHARS, name_problem


class _Name(validate.Validator):
    """A name that becomes part of a session id and so of a workspace folder name:
    the charset and length of :func:`agentflow.runtime.sessions.name_problem`."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, value: str) -> str:
        problem = name_problem(value, self.max_length)
        if problem is not None:
            raise ValidationError(problem)
        return value


def _name_field(max_length: int, description: str, **kw) -> fields.String:
    # pattern and lengths in the OpenAPI document too, so clients and fuzzers see the rule
    return fields.String(validate=_Name(max_length), metadata={
        "description": f"{description}: 1-{max_length} {NAME_CHARS}", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9._:@-]*$",
        "minLength": 1, "maxLength": max_length}, **kw)


def _worker_id() -> fields.String:
    return _name_field(MAX_WORKER_ID, "Caller's worker id", required=True)


def _resource_type(**kw) -> fields.String:
    return _name_field(MAX_RESOURCE_TYPE, "Resource type (backend name)", **kw)


class _StrictBoolean(fields.Boolean):
    """A JSON boolean only: ``0``, ``1`` and ``"yes"`` are refused, as the schema says."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class _StrictFloat(fields.Float):
    """A JSON number only: numeric strings are refused, as the schema says."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


def _timeout_field() -> fields.Float:
    # apispec renders Range(min_inclusive=False) as a plain "minimum"; say "exclusive" too
    return _StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False),
                        metadata={"exclusiveMinimum": True, "description": "Seconds (> 0)"})


class _Body(Schema):
    class Meta:
        unknown = RAISE


class ExecuteBody(_Body):
    worker_id = _worker_id()
    action = fields.String(required=True, validate=validate.Length(min=1, max=200),
                           metadata={"description": "Tool name, e.g. bash:run (aliases bash-run, bash_run)"})
    params = fields.Dict(load_default=dict, metadata={"description": "Tool parameters (JSON Schema in GET /tools)"})
    timeout = _timeout_field()
    trace_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))

    _PLAIN_KEYS = frozenset({"worker_id", "action", "params", "trace_id"})

    @classmethod
    def load_plain(cls, body: dict) -> dict | None:
        """What :meth:`load` returns for the plainest bodies (no ``timeout``, every
        field of its type and within its limits), in a fraction of the time; None for
        any other body, which ``load`` must judge. Every agent turn sends one of these."""
        if not cls._PLAIN_KEYS.issuperset(body):
            return None
        worker_id, action = body.get("worker_id"), body.get("action")
        params, trace_id = body.get("params", {}), body.get("trace_id")
        if name_problem(worker_id, MAX_WORKER_ID) is not None or not isinstance(action, str) \
                or not 1 <= len(action) <= 200 or not isinstance(params, dict):
            return None
        if trace_id is not None and (not isinstance(trace_id, str) or len(trace_id) > 200):
            return None
        return {"worker_id": worker_id, "action": action, "params": params, "timeout": None, "trace_id": trace_id}


class BatchItem(_Body):
    action = fields.String(required=True, validate=validate.Length(min=1, max=200))
    params = fields.Dict(load_default=dict)
    timeout = _timeout_field()


class BatchBody(_Body):
    worker_id = _worker_id()
    actions = fields.List(fields.Nested(BatchItem), required=True, validate=validate.Length(min=1, max=256))
    parallel = _StrictBoolean(load_default=False)
    stop_on_error = _StrictBoolean(load_default=True)
    trace_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class SessionCreateBody(_Body):
    worker_id = _worker_id()
    resource_type = _resource_type(required=True)
    config = fields.Dict(load_default=None, allow_none=True)
    session_config = fields.Dict(load_default=None, allow_none=True,
                                 metadata={"description": "Older name of `config`"})
    custom_name = _name_field(MAX_CUSTOM_NAME, "Session name (default: the session id)", load_default=None,
                              allow_none=True)

    @validates_schema
    def _one_config(self, data, **_):
        if data.get("config") is not None and data.get("session_config") is not None:
            raise ValidationError("give either 'config' or 'session_config', not both", "config")


class SessionDestroyBody(_Body):
    worker_id = _worker_id()
    resource_type = _resource_type(required=True)


class SessionListBody(_Body):
    worker_id = _worker_id()


class SessionRefreshBody(_Body):
    worker_id = _worker_id()
    resource_type = _resource_type(load_default=None, allow_none=True)


class WarmupBody(_Body):
    backends = fields.List(_resource_type(), load_default=None, allow_none=True)
    resources = fields.List(_resource_type(), load_default=None, allow_none=True,
                            metadata={"description": "Older name of `backends`"})


class ShutdownBody(_Body):
    force = _StrictBoolean(load_default=False)
    cleanup_sessions = _StrictBoolean(load_default=True)


class ToolsQuery(_Body):
    include_hidden = fields.Boolean(load_default=False)
    format = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(["openai", "default"]))


# -- responses (documentation and schema checks) -------------------------------------
class Meta(Schema):
    tool = fields.String(allow_none=True)
    resource_type = fields.String(allow_none=True)
    session_id = fields.String(allow_none=True)
    execution_time_ms = fields.Float()
    trace_id = fields.String(allow_none=True)
    request_id = fields.String()
    temporary_session = fields.Boolean()
    replayed = fields.Boolean()
    node_id = fields.String(allow_none=True, metadata={"description": "the node (server) that ran the request"})


class Envelope(Schema):
    code = fields.Integer(required=True, metadata={"description": "0 success; 1xxx request errors; 2xxx tool errors; 5000 internal"})
    message = fields.String(required=True)
    data = fields.Dict(required=True)
    meta = fields.Nested(Meta, required=True)


class Health(Schema):
    status = fields.String(required=True)
    version = fields.String(required=True)
    isolation = fields.Dict(metadata={"description": "How sessions are confined: mode, per-resource limits, warning"})


BODIES = {
    "ExecuteBody": ExecuteBody, "BatchBody": BatchBody, "SessionCreateBody": SessionCreateBody,
    "SessionDestroyBody": SessionDestroyBody, "SessionListBody": SessionListBody,
    "SessionRefreshBody": SessionRefreshBody, "WarmupBody": WarmupBody, "ShutdownBody": ShutdownBody,
}
