"""Relaying a request to the node that owns its session.

A client behind a plain round-robin balancer reaches any node; when the request's
session lives on another one, this node sends the same body with the same
``X-Request-ID`` there (with the cluster's token) and answers with what came back,
unchanged. A forwarded request is never forwarded again.

When the owner does not answer, the call must not hang: a connection that cannot be
made is retried until the owner's lease runs out (then it is lost: 1003); a connection
that breaks after the request was sent may have run it (2004, outcome unknown).
"""
from __future__ import annotations

import threading
import time

import requests
from flask import Response, request

from ..runtime.cluster import FORWARDED_HEADER, ForwardCall, node_lost_error
from ..runtime.errors import CallInterrupted, SessionError
from ..db import utcnow
from .envelope import request_id, runtime

_CONNECT_TIMEOUT = 2.0
_RETRY_PAUSE = 0.2
_RELAYED_HEADERS = ("Content-Type", "Retry-After")
_local = threading.local()


def _http() -> requests.Session:
    """One connection pool per thread (requests.Session is not thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False  # nodes talk directly, never through a user's HTTP proxy
    return session


def forwarded() -> bool:
    """Whether this request was relayed here by another node."""
    return FORWARDED_HEADER in request.headers


def relay(moved: ForwardCall) -> Response:
    """Send the current request to ``moved.node`` and return its answer as ours.

    Raises:
        SessionError: the request was forwarded here already (ownership moved meanwhile).
        NodeLost: the owner's lease ran out while it did not answer.
        CallInterrupted: the owner went away after receiving the request.
    """
    rt = runtime()
    if forwarded():
        raise SessionError(f"{moved.what} moved to node {moved.node.node_id} while this request was being "
                           "forwarded; send it again", {"node_id": moved.node.node_id})
    headers = {FORWARDED_HEADER: rt.cluster.node_id, "Content-Type": request.headers.get(
        "Content-Type", "application/json")}
    if "X-Request-ID" in request.headers:
        headers["X-Request-ID"] = request_id()
    if rt.config.forward_token:
        headers["Authorization"] = f"Bearer {rt.config.forward_token}"
    url = moved.node.url + request.full_path.rstrip("?")
    body = request.get_data(cache=True)
    read_timeout = rt.config.max_call_timeout + 60
    while True:
        try:
            answer = _http().post(url, data=body, headers=headers, timeout=(_CONNECT_TIMEOUT, read_timeout),
                                  allow_redirects=False)
            break
        except requests.ConnectionError as err:
            if not _unsent(err):
                raise _fate_after_cut_off(moved, err) from None
            _wait_or_lost(moved)
        except requests.Timeout as err:
            raise _cut_off(moved, err) from None
    response = Response(answer.content, status=answer.status_code)
    for name in _RELAYED_HEADERS:
        if name in answer.headers:
            response.headers[name] = answer.headers[name]
    return response


def _unsent(err: requests.ConnectionError) -> bool:
    """Whether the request surely never reached the owner (refused or unreachable)."""
    return isinstance(err, requests.exceptions.ConnectTimeout) or "NewConnectionError" in repr(err) \
        or "Connection refused" in str(err)


def _wait_or_lost(moved: ForwardCall) -> None:
    """Pause before trying the owner again; raise NodeLost once its lease is over."""
    cluster = runtime().cluster
    if cluster.is_gone(moved.node.node_id):
        cluster.reap_lost()
        raise node_lost_error(moved.session_id or moved.what, cluster.node(moved.node.node_id), moved.node.node_id)
    time.sleep(_RETRY_PAUSE)


def _fate_after_cut_off(moved: ForwardCall, err: Exception) -> Exception:
    """The connection to the owner broke after the request was sent: learn, within the
    owner's lease, whether the node died (then its sessions are gone: NodeLost, which a
    rollout answers by retrying the task on a fresh session) or lives on (a worker of it
    died: the call may or may not have run, 2004)."""
    cluster = runtime().cluster
    broke_at = utcnow()
    while True:
        node = cluster.node(moved.node.node_id)
        if cluster.is_gone(moved.node.node_id):
            cluster.reap_lost()
            lost = node_lost_error(moved.session_id or moved.what, cluster.node(moved.node.node_id),
                                   moved.node.node_id)
            lost.data["may_have_taken_effect"] = True  # it may have run before the node died
            return lost
        if node.heartbeat_at > broke_at:
            return _cut_off(moved, err)
        time.sleep(_RETRY_PAUSE)


def _cut_off(moved: ForwardCall, err: Exception) -> CallInterrupted:
    return CallInterrupted(
        f"node {moved.node.node_id}, which runs {moved.what}, stopped answering after it received this "
        f"request ({type(err).__name__}); the call may or may not have taken effect. Check its effects "
        "before sending it again with a new X-Request-ID",
        {"node_id": moved.node.node_id, "outcome": "unknown", "may_have_taken_effect": True})
