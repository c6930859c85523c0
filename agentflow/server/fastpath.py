"""POST /execute without Flask's per-request machinery, for requests that need none of it.

Every agent turn is a POST /execute, and most of the server's CPU per call went to
building Flask's request context, routing, proxies and response object around a call
that needs none of them. This WSGI layer, in front of the Flask app, answers the
ordinary case itself with the same functions the Flask view uses (the body schema,
the request checks, the idempotency protocol, the executor), and hands every request
it cannot prove ordinary to Flask, body intact: another path or method, an ``Origin``
header, a Content-Type other than ``application/json``, a chunked or oversized body,
a Host, token or ``X-Request-ID`` that fails its check, a body that fails validation,
a call whose session is on another node. Refusals and their wording therefore stay in
one place, the Flask app; an answer from here is byte-for-byte what Flask would send.
"""
from __future__ import annotations

import io
import logging
import time
import uuid
import weakref
from typing import Callable, Iterable

from werkzeug.http import HTTP_STATUS_CODES

from ..runtime import Runtime
from ..runtime.cluster import ForwardCall
from ..runtime.errors import ApiError, http_status
from .api.execute import run_call
from .envelope import error_envelope, json_bytes, meta_for, parse_body, parse_plain_execute, request_id_ok
from .guard import HostPolicy, host_problem
from .middleware import answer_once, token_accepted
from .schemas import ExecuteBody

log = logging.getLogger(__name__)

# the status lines werkzeug sends
_STATUS_LINES = {code: f"{code} {name.upper()}" for code, name in HTTP_STATUS_CODES.items()}
_HOSTS_REMEMBERED = 64
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class _Defer(Exception):
    """The request is not an ordinary one: the Flask app answers it."""


class ExecuteFastPath:
    """WSGI middleware: ordinary POST /execute requests here, everything else to ``app``."""

    def __init__(self, app: WSGIApp, runtime: Runtime, policy: HostPolicy, max_body: int):
        self._app = app
        self._rt = runtime
        self._policy = policy
        self._max_body = max_body
        self._schema = ExecuteBody()
        self._hosts_ok: set[tuple[str, str]] = set()
        # a connection's local address, asked of the kernel once rather than per request
        self._local_ips: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/execute" or environ.get("REQUEST_METHOD") != "POST" \
                or environ.get("SCRIPT_NAME"):
            return self._app(environ, start_response)
        started = time.perf_counter()
        rid = environ.get("HTTP_X_REQUEST_ID")
        raw = None
        try:
            self._check_headers(environ, rid)
            raw = self._read_body(environ)
            body = parse_plain_execute(raw) or parse_body(raw, self._schema)
        except (_Defer, ApiError):  # a refusal: the Flask app words it (and stores it for a retry)
            return self._defer(environ, raw, start_response)
        rid_or_new = rid or uuid.uuid4().hex
        try:
            answer = self._run(body, raw, rid, started) if rid else self._run_unclaimed(body, rid_or_new)
        except ForwardCall:  # nothing ran here and any claim was released: Flask relays it
            return self._defer(environ, raw, start_response)
        except ApiError as err:  # e.g. the id was used for another request, or is still running
            answer = error_envelope(err, meta_for(rid_or_new, started, self._rt.cluster.node_id)), err.http_status
        except Exception:  # boundary: as the Flask app's handler of unexpected errors
            log.exception("unhandled error")
            answer = ({"code": 5000, "message": "internal error; see the server log", "data": {},
                       "meta": meta_for(rid_or_new, started, self._rt.cluster.node_id)}, 500)
        return _respond(start_response, *answer)

    def _defer(self, environ: dict, raw: bytes | None, start_response: Callable) -> Iterable[bytes]:
        if raw is not None:
            environ["wsgi.input"] = io.BytesIO(raw)
        return self._app(environ, start_response)

    def _check_headers(self, environ: dict, rid: str | None) -> None:
        if "HTTP_ORIGIN" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            raise _Defer
        if environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() != "application/json":
            raise _Defer
        if rid is not None and not request_id_ok(rid):
            raise _Defer
        token = self._rt.config.auth_token
        if token and not token_accepted(self._rt.config, environ.get("HTTP_AUTHORIZATION", "")):
            raise _Defer
        self._check_host(environ)

    def _check_host(self, environ: dict) -> None:
        host = environ.get("HTTP_HOST")
        sock = environ.get("gunicorn.socket")
        try:
            key = (host, self._local_ip(sock) if sock is not None else environ.get("SERVER_NAME", ""))
        except (OSError, IndexError, TypeError):
            raise _Defer from None
        if key in self._hosts_ok:
            return
        if host is None or host_problem(self._policy, host, environ) is not None:
            raise _Defer
        if len(self._hosts_ok) >= _HOSTS_REMEMBERED:  # hostile clients may send many names
            self._hosts_ok.clear()
        self._hosts_ok.add(key)

    def _local_ip(self, sock) -> str:  # noqa: ANN001 - the connection's socket
        ip = self._local_ips.get(sock)
        if ip is None:
            ip = self._local_ips[sock] = str(sock.getsockname()[0])
        return ip

    def _read_body(self, environ: dict) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            raise _Defer from None
        if length < 0 or length > self._max_body:
            raise _Defer
        raw = environ["wsgi.input"].read(length)
        if len(raw) != length:  # the client went away mid-body: let Flask report it
            raise _Defer
        return raw

    def _run_unclaimed(self, body: dict, rid: str) -> tuple[dict, int]:
        result = run_call(self._rt, body, rid, claimed=False)
        return result, http_status(result["code"])

    def _run(self, body: dict, raw: bytes, rid: str, started: float) -> tuple[dict, int]:
        def claimed():
            result = run_call(self._rt, body, rid, claimed=True)
            return result, http_status(result["code"]), True

        answer = answer_once(self._rt.requests, rid, "execute", raw, 900.0, claimed,
                             lambda: meta_for(rid, started, self._rt.cluster.node_id))
        return answer.body, answer.status


def _respond(start_response: Callable, body: dict, status: int) -> list[bytes]:
    data = json_bytes(body)
    start_response(_STATUS_LINES.get(status) or f"{status} STATUS",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
