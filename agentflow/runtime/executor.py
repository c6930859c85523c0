"""Running one tool call: resolve, validate, pick the session, run, audit.

Every call that reaches the executor — successful, failed or rejected — gets one row in
``tool_calls``, committed before the answer is returned.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import jsonschema

from ..db import utcnow
from ..db.models import ToolCall
from ..tools.base import ParamError, SessionFailed, ToolContext, ToolError, ToolSpec, ToolTimeout
from .cluster import ForwardCall
from .errors import ApiError, InternalError, ParameterError, SessionError
from .jsontext import dumps_bytes
from .registry import ToolRegistry
from .sessions import SessionManager
from .writer import GroupCommitter, Row

log = logging.getLogger(__name__)

AUDIT_RESULT_CAP = 64 * 1024
_SECRET_KEY = re.compile(r"api[_-]?key|token|secret|password|passwd|authorization", re.I)
_BATCH_THREADS = 16

FinalWrite = Callable[[dict], Row]
"""Given the envelope, a write for the transaction of the call's audit row."""


def mask_secrets(value: Any) -> Any:
    """Copy of ``value`` with the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _schema_error_message(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", err.message)
        return f"parameter '{missing.group(1) if missing else path}' is required"
    if err.validator == "additionalProperties":
        extra = ", ".join(repr(e) for e in re.findall(r"'([^']+)'", err.message))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"unknown parameter(s) {extra}; " + (f"allowed: {allowed}" if allowed else "this tool takes none")
    return f"parameter '{path or '(params)'}': {err.message}"


class Executor:
    def __init__(self, registry: ToolRegistry, sessions: SessionManager, writer: GroupCommitter,
                 max_output_bytes: int, max_call_timeout: float, node_id: str | None = None):
        self._node_id = node_id
        self._registry = registry
        self._sessions = sessions
        self._writer = writer
        self._max_output = max_output_bytes
        self._max_timeout = max_call_timeout
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._batch_pool = ThreadPoolExecutor(_BATCH_THREADS, thread_name_prefix="agentflow-batch")
        self._pid = os.getpid()

    # -- one call ----------------------------------------------------------------
    def execute(self, *, worker_id: str, action: str, params: dict | None, timeout: float | None = None,
                trace_id: str | None = None, request_id: str | None = None, batch_index: int | None = None,
                final_write: FinalWrite | None = None, forwardable: bool = False) -> dict:
        """Run one call and return its envelope (tool failures are envelopes too).

        Raises:
            ForwardCall: (only when ``forwardable``) the worker's session for this
                call is on another node; nothing ran and nothing was audited here.
        """
        started_at, t0 = utcnow(), time.perf_counter()
        params = params if params is not None else {}
        meta = {"tool": action, "resource_type": None, "session_id": None, "execution_time_ms": 0.0,
                "trace_id": trace_id or uuid.uuid4().hex, "request_id": request_id or uuid.uuid4().hex,
                "temporary_session": False, "node_id": self._node_id}
        session_write: Row | None = None
        try:
            spec = self._registry.resolve(action)
            meta["tool"], meta["resource_type"] = spec.full_name, spec.resource_type
            code, message, data, session_write = self._run(spec, worker_id, params, timeout, meta)
        except ForwardCall as moved:
            if forwardable:
                raise
            err = SessionError(f"{moved.what} is on node {moved.node.node_id}, not the node running this batch; "
                               "send this call on its own (it is then forwarded there)",
                               {"node_id": moved.node.node_id})
            code, message, data = err.code, err.message, err.data
        except ApiError as err:
            code, message, data = err.code, err.message, err.data
        except Exception:  # boundary: the traceback goes to the log, never to the client
            log.exception("internal error in %s (trace %s)", action, meta["trace_id"])
            err = InternalError(f"internal error while running '{action}'; see the server log (trace_id "
                                f"{meta['trace_id']})")
            code, message, data = err.code, err.message, err.data
        meta["execution_time_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        envelope = {"code": code, "message": message, "data": data, "meta": meta}
        rows = [(ToolCall.__table__, self._audit_values(envelope, worker_id, params, started_at, batch_index))]
        if session_write is not None:
            rows.append(session_write)
        if final_write is not None:
            rows.append(final_write(envelope))
        self._writer.write(rows=rows)
        return envelope

    def _run(self, spec: ToolSpec, worker_id: str, params: dict, timeout: float | None, meta: dict):
        if not isinstance(params, dict):
            raise ParameterError("'params' must be a JSON object")
        self._validate(spec, params)
        call_timeout = self._timeout(spec, timeout if timeout is not None else params.get("timeout"))
        kwargs = {k: v for k, v in params.items() if k != "timeout"}
        self._registry.ensure_ready(spec.resource_type)
        info, row, state_before = None, None, None
        if spec.needs_session:
            row = self._sessions.for_call(worker_id, spec.resource_type)
            if row is None:
                info = self._sessions.temporary(worker_id, spec.resource_type)
                meta["temporary_session"] = True
            else:
                if self._sessions.near_expiry(row, call_timeout):
                    self._writer.write(rows=[self._sessions.touch_row(row.id, None)])
                info = self._sessions.info(row)
                state_before = json.dumps(info.state, sort_keys=True)
            meta["session_id"] = info.session_id
        ctx = ToolContext(worker_id=worker_id, timeout=call_timeout, max_output_bytes=self._max_output,
                          session=info, trace_id=meta["trace_id"])
        try:
            code, message, data = self._call(spec, ctx, kwargs)
        finally:
            if info is not None and info.temporary:
                self._sessions.end_temporary(info)
        session_write = None
        if row is not None:
            changed = json.dumps(info.state, sort_keys=True) != state_before
            session_write = self._sessions.touch_row(row.id, info.state if changed else None)
        return code, message, data, session_write

    def _call(self, spec: ToolSpec, ctx: ToolContext, kwargs: dict) -> tuple[int, str, dict]:
        backend = self._registry.backends[spec.resource_type]
        try:
            data = getattr(backend, spec.method_name)(ctx, **kwargs)
        except ToolTimeout as err:
            return 2002, err.message, err.data
        except ToolError as err:
            return 2001, err.message, err.data
        except ParamError as err:
            raise ParameterError(str(err), {"param": err.param}) from err
        except SessionFailed as err:
            raise SessionError(str(err)) from err
        return 0, "success", data if data is not None else {}

    def _validate(self, spec: ToolSpec, params: dict) -> None:
        validator = self._validators.get(spec.full_name)
        if validator is None:
            cls = jsonschema.validators.validator_for(spec.parameters)
            validator = self._validators[spec.full_name] = cls(spec.parameters)
        if validator.is_valid(params):  # the common case, without best_match's ranking of errors
            return
        err = jsonschema.exceptions.best_match(validator.iter_errors(params))
        if err is not None:
            param = err.absolute_path[0] if err.absolute_path else None
            raise ParameterError(f"{spec.full_name}: {_schema_error_message(err)}", {"param": param})

    def _timeout(self, spec: ToolSpec, requested: Any) -> float:
        if requested is None:
            return min(spec.default_timeout, spec.max_timeout, self._max_timeout)
        if isinstance(requested, bool) or not isinstance(requested, (int, float)) or requested <= 0:
            raise ParameterError(f"parameter 'timeout': must be a positive number of seconds, got {requested!r}",
                                 {"param": "timeout"})
        # capped, not refused: an agent passing its remaining budget should not fail
        return float(min(requested, spec.max_timeout, self._max_timeout))

    def _audit_values(self, envelope: dict, worker_id: str, params: dict, started_at, batch_index) -> dict:
        meta = envelope["meta"]
        raw = dumps_bytes(envelope["data"])
        return dict(
            request_id=meta["request_id"], trace_id=meta["trace_id"], worker_id=worker_id,
            session_id=meta["session_id"], temporary_session=meta["temporary_session"],
            resource_type=meta["resource_type"] or "", action=meta["tool"], batch_index=batch_index,
            params=mask_secrets(params) if isinstance(params, dict) else {"_invalid": repr(params)[:1000]},
            code=envelope["code"], message=envelope["message"][:4000],
            result=raw[:AUDIT_RESULT_CAP].decode("utf-8", "ignore"), result_size=len(raw),
            result_sha256=hashlib.sha256(raw).hexdigest(), result_truncated=len(raw) > AUDIT_RESULT_CAP,
            started_at=started_at, duration_ms=meta["execution_time_ms"], server_pid=self._pid,
            node_id=self._node_id,
        )

    # -- batch -------------------------------------------------------------------
    def execute_batch(self, *, worker_id: str, actions: list[dict], parallel: bool, stop_on_error: bool,
                      trace_id: str | None, request_id: str | None,
                      item_replay: Callable[[int], dict | None] | None = None,
                      item_final_write: Callable[[int], FinalWrite | None] | None = None) -> dict:
        """Run several calls; returns ``{results, total, executed, succeeded}``."""
        trace_id = trace_id or uuid.uuid4().hex

        def run(i: int, item: dict) -> dict:
            replayed = item_replay(i) if item_replay else None
            if replayed is not None:
                return replayed
            return self.execute(worker_id=worker_id, action=item["action"], params=item.get("params"),
                                timeout=item.get("timeout"), trace_id=trace_id,
                                request_id=f"{request_id}#{i}" if request_id else None, batch_index=i,
                                final_write=item_final_write(i) if item_final_write else None)

        if parallel:
            results = list(self._batch_pool.map(lambda p: run(*p), enumerate(actions)))
        else:
            results = []
            for i, item in enumerate(actions):
                results.append(run(i, item))
                if stop_on_error and results[-1]["code"] != 0:
                    break
        return {"results": results, "total": len(actions), "executed": len(results),
                "succeeded": sum(1 for r in results if r["code"] == 0)}
