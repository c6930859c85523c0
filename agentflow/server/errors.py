"""One place turns every failure into an envelope; tracebacks stay in the log."""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..runtime.cluster import ClusterFull, ForwardCall
from ..runtime.errors import ApiError
from .envelope import envelope, json_response

log = logging.getLogger(__name__)


def api_error_response(err: ApiError, body: dict | None = None):
    """The response to ``err``: its envelope (or ``body``, the envelope built already)."""
    response = json_response(body if body is not None else envelope(err.data, err.code, err.message), err.http_status)
    if isinstance(err, ClusterFull):
        response.headers["Retry-After"] = str(err.retry_after)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ForwardCall)
    def _forward(moved: ForwardCall):
        from .forward import relay

        try:
            return relay(moved)
        except ApiError as err:
            return api_error_response(err)

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return api_error_response(err)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return json_response(envelope({}, 1000, f"request body is larger than the limit of {limit} bytes "
                                                "(server config 'max_request_bytes')"), 413)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        from flask import request

        message = f"{err.code} {err.name}: no endpoint {request.method} {request.path}" if err.code in (404, 405) \
            else f"{err.code} {err.name}: {err.description}"
        response = json_response(envelope({}, 1000, message), err.code or 400)
        for name, value in err.get_headers():  # e.g. Allow on 405, as RFC 9110 asks
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return json_response(envelope({}, 5000, "internal error; see the server log"), 500)
