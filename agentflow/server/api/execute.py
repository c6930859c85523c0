"""POST /execute and /execute/batch."""
from __future__ import annotations

from flask import Blueprint, g

from ...runtime import Runtime
from ...runtime.errors import http_status
from ..envelope import envelope, load_body, request_id, runtime
from ..forward import forwarded
from ..middleware import idempotent
from ..schemas import BatchBody, ExecuteBody

bp = Blueprint("execute", __name__)
_execute_body, _batch_body = ExecuteBody(), BatchBody()


@bp.post("/execute")
@idempotent("execute")
def execute():
    body = load_body(_execute_body)
    claimed = bool(g.get("idempotent"))
    g.answer_stored = claimed
    result = run_call(runtime(), body, request_id(), claimed)
    return result, http_status(result["code"])


def run_call(rt: Runtime, body: dict, rid: str, claimed: bool) -> dict:
    """Run one validated /execute body; with ``claimed``, the answer is stored for
    replay in the transaction of the call's audit row.

    Raises:
        ForwardCall: the worker's session is on another node (nothing ran here).
    """
    final_write = None
    if claimed:
        final_write = lambda env: rt.requests.settle_row(rid, http_status(env["code"]), env)  # noqa: E731
    return rt.executor.execute(worker_id=body["worker_id"], action=body["action"], params=body["params"],
                               timeout=body["timeout"], trace_id=body["trace_id"], request_id=rid,
                               final_write=final_write, forwardable=True)


@bp.post("/execute/batch")
@idempotent("execute/batch")
def execute_batch():
    body = load_body(_batch_body)
    rt = runtime()
    if not forwarded():
        rt.cluster.go_home(body["worker_id"])  # the worker's sessions are elsewhere: run it there
    rid = request_id() if g.get("idempotent") else None

    # Each item keeps its own record, so a batch retried after its worker died
    # replays the items that finished and runs only the rest.
    def item_replay(i):
        replay = rt.requests.begin(f"{rid}#{i}", "execute/batch/item", wait_limit=900)
        return replay.body if replay else None

    def item_final(i):
        return lambda env: rt.requests.settle_row(f"{rid}#{i}", http_status(env["code"]), env)

    data = rt.executor.execute_batch(worker_id=body["worker_id"], actions=body["actions"],
                                     parallel=body["parallel"], stop_on_error=body["stop_on_error"],
                                     trace_id=body["trace_id"], request_id=rid,
                                     item_replay=item_replay if rid else None,
                                     item_final_write=item_final if rid else None)
    failures = [r for r in data["results"] if r["code"] != 0]
    code = failures[0]["code"] if failures else 0
    message = "success" if not failures else f"{len(failures)} of {data['executed']} call(s) failed; first: " \
        f"{failures[0]['message']}"
    return envelope(data, code, message, tool="batch", trace_id=data["results"][0]["meta"]["trace_id"]), 200
