"""POST /warmup and GET /warmup/status."""
from __future__ import annotations

from flask import Blueprint

from ..envelope import envelope, json_response, load_body, runtime
from ..middleware import idempotent
from ..schemas import WarmupBody

bp = Blueprint("warmup", __name__, url_prefix="/warmup")
_body = WarmupBody()


@bp.post("")
@idempotent("warmup")
def warmup():
    body = load_body(_body)
    names = body["backends"] if body["backends"] is not None else body["resources"]
    results = runtime().warmup(names)
    failed = sorted(n for n, r in results.items() if not r["success"])
    if failed:
        message = "warmup failed for " + ", ".join(f"{n} ({results[n]['error']})" for n in failed)
        return envelope({"results": results, "error": message}, 2003, message), 503
    return envelope({"results": results}, 0, "warmed up"), 200


def backend_status() -> dict:
    """Each backend's warmup state, with what the backend says of itself (e.g. rag's
    ``retrieval``) when it has a ``status_info()``."""
    rt = runtime()
    backends = rt.warmup_status()
    for name, entry in backends.items():
        describe = getattr(rt.registry.backends.get(name), "status_info", None)
        if callable(describe):
            entry.update(describe())
    return backends


@bp.get("/status")
def status():
    return json_response(envelope({"backends": backend_status(), "isolation": runtime().isolation_report()}))
