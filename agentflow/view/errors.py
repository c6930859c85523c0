"""The viewer's errors and the one handler that renders them.

Every page error is a :class:`ViewError` subclass carrying its HTTP status; one handler
renders them (and werkzeug's own, such as an unknown URL) as the error page, or as JSON
under ``/api/``. Anything else is logged and answered with a plain 500 page that shows
no internals.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

__all__ = ["BadParameter", "NotFound", "ViewError", "init_app"]

log = logging.getLogger(__name__)


class ViewError(Exception):
    """A page cannot be shown as asked; ``status`` is the HTTP status, the message says why."""

    status = 400
    title = "Bad request"


class NotFound(ViewError):
    """No such run, task, attempt, seed or audit row in this database."""

    status = 404
    title = "Not found"


class BadParameter(ViewError):
    """A query parameter is malformed or out of range (page number, sort key, date, filter)."""

    status = 400
    title = "Bad parameter"


def _render(status: int, title: str, message: str):
    if request.path.startswith("/api/"):
        return jsonify({"error": title, "message": message}), status
    return render_template("error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ViewError)
    def _view_error(err: ViewError):
        return _render(err.status, err.title, str(err))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        return _render(err.code or 500, err.name, err.description or "")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # boundary: log it, show nothing of it
        log.exception("viewer page %s failed", request.path)
        return _render(500, "Internal error", "the page failed; the viewer's log has the details")
