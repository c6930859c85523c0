"""Cross-cutting request handling: timing, request checks (request id, Host, Origin,
Content-Type), bearer-token auth, idempotent POSTs."""
from __future__ import annotations

import functools
import hashlib
import hmac
import time
from typing import Callable

from flask import Flask, g, request

from ..runtime.errors import ApiError, Unauthorized
from ..runtime.requestlog import RequestLog
from .envelope import base_meta, check_request_id, error_envelope, json_response, request_id, runtime
from .errors import api_error_response
from .guard import HostPolicy, check_request

_OPEN_ENDPOINTS = {"admin.health"}


def authenticated() -> bool:
    """The request carries the API token, or the cluster token another node forwards with."""
    return token_accepted(runtime().config, request.headers.get("Authorization", ""))


def token_accepted(config, authorization: str) -> bool:
    """Whether an ``Authorization`` header value holds the API or the cluster token."""
    if not authorization.startswith("Bearer "):
        return False
    given_token = authorization[7:].strip().encode()
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


class Answer:
    """What an idempotent request answers: ``body`` with ``status``; ``error`` when it
    is an API error's envelope (its response may carry headers, e.g. Retry-After)."""

    __slots__ = ("body", "status", "error")

    def __init__(self, body: dict, status: int, error: ApiError | None = None):
        self.body, self.status, self.error = body, status, error


def answer_once(log: RequestLog, rid: str, endpoint: str, raw_body: bytes, wait_limit: float,
                view: Callable[[], tuple[dict, int, bool]], error_meta: Callable[[], dict],
                replay_status=None) -> Answer:
    """The idempotency protocol of a POST with ``X-Request-ID`` (for the Flask views and
    the fast path of POST /execute): claim the id, or answer with what it answered before.

    ``view()`` returns ``(body, status, stored)``; ``stored`` says the view stored the
    answer itself, in the transaction of its audit row. An API error it raises is stored
    and answered; anything else releases the claim (a retry runs it again) and propagates.
    """
    replay = log.begin(rid, endpoint, wait_limit, body_sha256=hashlib.sha256(raw_body).hexdigest())
    if replay is not None:
        status = replay_status(replay.body, replay.http_status) if replay_status else replay.http_status
        return Answer(replay.body, status)
    try:
        body, status, stored = view()
    except ApiError as err:
        body = error_envelope(err, error_meta())
        log.settle(rid, err.http_status, body)
        return Answer(body, err.http_status, err)
    except BaseException:
        log.release(rid)
        raise
    if not stored:
        log.settle(rid, status, body)
    return Answer(body, status)


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

            def claimed():
                g.idempotent = True
                body, status = view(*args, **kwargs)
                return body, status, bool(g.get("answer_stored"))

            answer = answer_once(runtime().requests, rid, endpoint, request.get_data(cache=True), wait_limit,
                                 claimed, base_meta, replay_status)
            return api_error_response(answer.error, answer.body) if answer.error else \
                json_response(answer.body, answer.status)

        return run

    return wrap


__all__ = ["Answer", "answer_once", "authenticated", "idempotent", "init_app", "request_id", "token_accepted"]
