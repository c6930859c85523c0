"""``POST /api/v1/execute`` and ``/api/v1/execute/batch``: tool calls through the
runtime's executor (validated, audited, forwarded to the session's node like ours)."""
from __future__ import annotations

from flask import g

from ...runtime.errors import http_status
from ..envelope import load_body, request_id, runtime
from ..forward import forwarded
from ..middleware import idempotent
from .bodies import BatchBody, ExecuteBody
from .common import answer, bp, label, reference_errors, resolve_action
from .protocol import ALL_REQUESTS_FAILED, PARTIAL_FAILURE, call_status, reference_envelope

_execute, _batch = ExecuteBody(), BatchBody()


def _replay_status(body: dict, stored: int) -> int:
    # a call's answer is stored with our status (200 for a tool that ran and failed,
    # so that a retry does not run it again) and sent with the reference's
    return call_status(body.get("code", 0), stored)


@bp.post("/execute")
@idempotent("v1/execute", replay_status=_replay_status)
@reference_errors
def execute():
    label("execute")
    body = load_body(_execute)
    rt = runtime()
    final_write = None
    if g.get("idempotent"):
        rid = request_id()
        final_write = lambda env: rt.requests.settle_row(  # noqa: E731
            rid, http_status(env["code"]), reference_envelope(env))
        g.answer_stored = True
    result = rt.executor.execute(worker_id=body["worker_id"], action=resolve_action(body["action"]),
                                 params=body["params"] or {}, timeout=body["timeout"], trace_id=body["trace_id"],
                                 request_id=request_id(), final_write=final_write, forwardable=True)
    converted = reference_envelope(result)
    return converted, call_status(converted["code"], http_status(result["code"]))


@bp.post("/execute/batch")
@idempotent("v1/execute/batch")
@reference_errors
def execute_batch():
    label("batch:execute")
    body = load_body(_batch)
    rt = runtime()
    if not forwarded():
        rt.cluster.go_home(body["worker_id"])  # the worker's sessions are elsewhere: run it there
    rid = request_id() if g.get("idempotent") else None

    def item_replay(i):
        replay = rt.requests.begin(f"{rid}#{i}", "v1/execute/batch/item", wait_limit=900)
        return replay.body if replay else None

    def item_final(i):
        return lambda env: rt.requests.settle_row(f"{rid}#{i}", http_status(env["code"]), reference_envelope(env))

    actions = [{"action": resolve_action(a["action"]), "params": a["params"] or {}, "timeout": a["timeout"]}
               for a in body["actions"]]
    data = rt.executor.execute_batch(worker_id=body["worker_id"], actions=actions, parallel=body["parallel"],
                                     stop_on_error=body["stop_on_error"], trace_id=body["trace_id"], request_id=rid,
                                     item_replay=item_replay if rid else None,
                                     item_final_write=item_final if rid else None)
    results = [reference_envelope(r) for r in data["results"]]
    ok = sum(1 for r in results if r["code"] == 0)
    out = {"results": results, "total": data["total"], "executed": data["executed"], "success_count": ok}
    if ok == data["executed"] == data["total"]:
        return answer(out, "batch:execute", resource_type=None), 200
    failed = data["executed"] - ok
    first = next(r for r in results if r["code"] != 0)
    if ok == 0:
        return answer(out, "batch:execute", ALL_REQUESTS_FAILED, "All actions failed", resource_type=None,
                      agentflow_code=first["meta"]["agentflow_code"]), 500
    return answer(out, "batch:execute", PARTIAL_FAILURE, f"{failed} out of {data['executed']} actions failed",
                  resource_type=None, agentflow_code=first["meta"]["agentflow_code"]), 207
