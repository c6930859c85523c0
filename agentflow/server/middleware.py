"""Cross-cutting request handling: timing, request checks (request id, Host, Origin,
Content-Type), bearer-token auth, idempotent POSTs."""
from __future__ import annotations

import functools
import hashlib
import hmac
import time

from flask import Flask, g, request

from ..runtime.errors import ApiError, Unauthorized
from .envelope import check_request_id, json_response, request_id, runtime
from .errors import api_error_response
from .guard import HostPolicy, check_request

_OPEN_ENDPOINTS = {"admin.health"}


def authenticated() -> bool:
    """The request carries the API token, or the cluster token another node forwards with."""
    config = runtime().config
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer "):
        return False
    given_token = given[7:].strip().encode()
    return any(hmac.compare_digest(given_token, token.encode())
               for token in (config.auth_token, config.cluster_token) if token)


def init_app(app: Flask) -> None:
    policy = HostPolicy(app.extensions["agentflow"].config)

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        if request.routing_exception is None:  # unknown routes and methods get their 404/405
            check_request_id()
            check_request(policy)  # before auth: a browser's request is refused whatever it carries
        if runtime().config.auth_token and request.endpoint not in _OPEN_ENDPOINTS and not authenticated():
            reason = "missing" if "Authorization" not in request.headers else "wrong"
            raise Unauthorized(f"{reason} bearer token: send 'Authorization: Bearer <token>' "
                               "(the token set by AGENTFLOW_API_TOKEN or server.auth_token)")


def idempotent(endpoint: str, wait_limit: float = 900.0, replay_status=None):
    """Answer a retried POST (same ``X-Request-ID``) with the stored response.

    The view returns ``(body, status)``; a view that stores the answer itself (inside
    the transaction of its audit row) sets ``g.answer_stored``. ``replay_status(body,
    stored_status)``, when given, is the HTTP status a replayed answer is sent with
    (for answers stored with a status other than the one they were first sent with).
    """

    def wrap(view):
        @functools.wraps(view)
        def run(*args, **kwargs):
            rid = request.headers.get("X-Request-ID")
            if not rid:
                body, status = view(*args, **kwargs)
                return json_response(body, status)
            g.request_id = rid  # its length and characters were checked before the view
            log = runtime().requests
            digest = hashlib.sha256(request.get_data(cache=True)).hexdigest()
            replay = log.begin(rid, endpoint, wait_limit, body_sha256=digest)
            if replay is not None:
                status = replay_status(replay.body, replay.http_status) if replay_status else replay.http_status
                return json_response(replay.body, status)
            g.idempotent = True
            try:
                body, status = view(*args, **kwargs)
            except ApiError as err:
                response = api_error_response(err)
                log.settle(rid, err.http_status, response.get_json())
                return response
            except BaseException:
                log.release(rid)
                raise
            if not g.get("answer_stored"):
                log.settle(rid, status, body)
            return json_response(body, status)

        return run

    return wrap


__all__ = ["authenticated", "idempotent", "init_app", "request_id"]
