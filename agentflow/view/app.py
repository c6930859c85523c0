"""The viewer's application factory: the only place its Flask app is built."""
from __future__ import annotations

import time
from typing import Any, Mapping
from urllib.parse import urlencode

from flask import Flask, current_app, g, request, url_for

from . import db, errors, render
from .errors import BadParameter
from .pages import blueprints

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,
    # Host names a request may name (its Host header); None: any. ``agentflow view`` bound
    # to loopback allows only loopback names, which stops DNS rebinding.
    "ALLOWED_HOSTS": None,
    "SQL_MAX_ROWS": 1000,
    "SQL_TIME_LIMIT_S": 5.0,
    "POLL_INTERVAL_MS": 2000,
    "MAX_CONTENT_LENGTH": 256 * 1024,  # the SQL form is the only body
}

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
"""No inline script or style, no other origin: stored model output and tool results are
shown as escaped text, and even markup that got through could not run or load anything."""


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the viewer.

    Args:
        config: ``DATABASE_URL`` (required) and optionally the other keys of :data:`DEFAULTS`.

    Raises:
        DatabaseError: the database URL is not sqlite or PostgreSQL, or the sqlite file is missing.
    """
    app = Flask("agentflow.view")
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    if not app.config["DATABASE_URL"]:
        raise ValueError("the viewer needs DATABASE_URL")
    db.init_app(app)
    errors.init_app(app)
    for bp in blueprints():
        app.register_blueprint(bp)
    _init_templates(app)
    app.before_request(_before)
    app.after_request(_after)
    return app


def _before():
    g.t0 = time.perf_counter()
    allowed = _allowed_hosts()
    if allowed is not None and (request.host.rsplit(":", 1)[0].strip("[]").lower() not in allowed):
        raise BadParameter(f"this viewer answers requests for {', '.join(sorted(allowed))} only, not "
                           f"{request.host!r} (start it with --host to serve another name)")


def _allowed_hosts():
    hosts = current_app.config["ALLOWED_HOSTS"]
    return None if hosts is None else {h.lower() for h in hosts}


def _after(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    if "t0" in g:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.t0) * 1000:.1f}"
    return response


def _url_with(**changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one); the page
    number resets unless it is one of the changes."""
    args = {k: v for k, v in request.args.items()}
    if "page" not in changes:
        args.pop("page", None)
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = value
    base = url_for(request.endpoint, **(request.view_args or {}))
    return base + ("?" + urlencode(args) if args else "")


def _init_templates(app: Flask) -> None:
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters.update(
        int=render.fmt_int, score=render.fmt_score, usd=render.fmt_usd, ms=render.fmt_duration_ms, bytes=render.fmt_bytes,
        time=render.fmt_time, pct=lambda v, d=1: "–" if v is None else f"{100 * float(v):.{d}f}%",
        seconds=lambda s: render.fmt_duration_ms(None if s is None else float(s) * 1000))
    from ..rollout.metrics import PASS_THRESHOLD

    app.jinja_env.globals.update(url_with=_url_with, poll_ms=lambda: app.config["POLL_INTERVAL_MS"],
                                 pass_threshold=PASS_THRESHOLD)
