"""``/api/v1``: the AgentFlow reference's wire protocol, as an adapter over our runtime.

Code written against the public AgentFlow project (its ``sandbox`` client, its rollout
and synthesis pipelines) sends its requests under ``/api/v1``; these blueprints answer
them in that project's shapes, paths and status codes, while every call still goes
through our runtime: the same executor (validation, audit row, forwarding to the
session's node), sessions, request log (``X-Request-ID`` replays) and the middleware
(auth, Host/Origin/Content-Type checks). The paths without the prefix keep our own
documented envelope; nothing below the server layer knows this protocol exists.

Modules: :mod:`.protocol` (the shapes, as pure functions), :mod:`.bodies` (request
bodies), :mod:`.common` (the blueprint, errors, name lookups) and the views —
:mod:`.calls` (execute), :mod:`.sessions` (session, lifecycle, worker, init) and
:mod:`.admin` (tools, warmup, shutdown, ``GET /ready``). See docs/reference-compat.md.
"""
from __future__ import annotations

from . import admin, calls, sessions  # noqa: F401 - the views register themselves on the blueprints
from .common import bp, root_bp

BLUEPRINTS = [bp, root_bp]

__all__ = ["BLUEPRINTS"]
