"""Request bodies of the reference protocol (``/api/v1``).

Unlike our own bodies (:mod:`agentflow.server.schemas`), these ignore fields they do not
know: the reference's server does (its messages allow extra fields), and its client
may send some (``ttl``, ``auto_extend``, ``message_id`` …). Names that become part of a
session id or workspace folder are checked as strictly as ours.
"""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ...runtime.sessions import MAX_CUSTOM_NAME, MAX_RESOURCE_TYPE, MAX_WORKER_ID, name_problem


class _Name(validate.Validator):
    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, value: str) -> str:
        problem = name_problem(value, self.max_length)
        if problem is not None:
            raise ValidationError(problem)
        return value


def _name(max_length: int, **kw) -> fields.String:
    return fields.String(validate=_Name(max_length), **kw)


class _Bool(fields.Boolean):
    """A JSON boolean (or null: the default)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class _Seconds(fields.Float):
    """A positive number of seconds, or null."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (str, bytes, bool)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


def _timeout() -> _Seconds:
    return _Seconds(load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False))


class _Body(Schema):
    class Meta:
        unknown = EXCLUDE


class WorkerBody(_Body):
    """Bodies that only name the worker: heartbeat, status, session/list, worker/disconnect."""

    worker_id = _name(MAX_WORKER_ID, required=True)


class ExecuteBody(WorkerBody):
    action = fields.String(required=True, validate=validate.Length(min=1, max=200))
    params = fields.Dict(load_default=dict, allow_none=True)
    timeout = _timeout()
    trace_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class BatchItem(_Body):
    action = fields.String(required=True, validate=validate.Length(min=1, max=200))
    params = fields.Dict(load_default=dict, allow_none=True)
    timeout = _timeout()


class BatchBody(WorkerBody):
    actions = fields.List(fields.Nested(BatchItem), required=True, validate=validate.Length(min=1, max=256))
    parallel = _Bool(load_default=False)
    stop_on_error = _Bool(load_default=True)
    trace_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class SessionCreateBody(WorkerBody):
    resource_type = _name(MAX_RESOURCE_TYPE, required=True)
    session_config = fields.Dict(load_default=None, allow_none=True)
    config = fields.Dict(load_default=None, allow_none=True)
    custom_name = _name(MAX_CUSTOM_NAME, load_default=None, allow_none=True)


class SessionDestroyBody(WorkerBody):
    resource_type = _name(MAX_RESOURCE_TYPE, required=True)


class SessionRefreshBody(WorkerBody):
    resource_type = _name(MAX_RESOURCE_TYPE, load_default=None, allow_none=True)


class InitResourceBody(WorkerBody):
    resource_type = _name(MAX_RESOURCE_TYPE, required=True)
    init_config = fields.Dict(load_default=None, allow_none=True)


class InitBatchBody(WorkerBody):
    resource_configs = fields.Dict(keys=_name(MAX_RESOURCE_TYPE), values=fields.Dict(allow_none=True),
                                   load_default=dict)


class InitFromConfigBody(WorkerBody):
    config_path = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    override_params = fields.Dict(load_default=dict, allow_none=True)


class WarmupBody(_Body):
    backends = fields.List(_name(MAX_RESOURCE_TYPE), load_default=None, allow_none=True)


class ShutdownBody(_Body):
    force = _Bool(load_default=False)
    cleanup_sessions = _Bool(load_default=True)


class ToolsQuery(_Body):
    include_hidden = fields.Boolean(load_default=False)
