"""``/mcp``: the sandbox's tools over MCP Streamable HTTP, behind the server's token.

The MCP SDK's HTTP transport is ASGI; this server is WSGI (Flask under gunicorn
gthread). The bridge is the SDK's own session manager in **stateless, JSON-response**
mode: every POST is one JSON-RPC message answered by one JSON body, so nothing has to
stream through WSGI and no MCP state lives in one worker's memory. Each gunicorn worker
runs that manager on an event loop thread of its own; the Flask view hands it the
request as an ASGI scope and body and returns what it answers.

The connection (one MCP session = one AgentFlow ``worker_id``) is ours, not the SDK's:

- An ``initialize`` answered with 200 gets an ``Mcp-Session-Id``: ``mcp-<32 hex>.<mac>``,
  signed with a key derived from the cluster's token (or, without one, a key in the data
  dir), so any worker — and any node of a cluster that shares a token — accepts it, and
  an id this server never issued is a 404. Its worker is ``mcp-<32 hex>``, which is also
  the ``trace_id`` of its audited calls.
- A request without a session id (a client speaking the stateless 2026-07-28 protocol,
  or a bare ``tools/call``) runs with a worker of its own for that request: its
  sessions are temporary.
- ``DELETE /mcp`` (the client closing the connection) destroys the worker's sessions;
  otherwise they expire after the server's ``session_ttl`` like any idle session.
- ``server/discover`` advertises only the handshake-era protocol versions, so SDK
  clients (which prefer the stateless protocol) open a session.

Calls run through the runtime's executor like ``/execute`` (validated, audited, output
capped). In a cluster, a call for a session on another node is sent to that node's
``/execute`` (with the cluster token, as forwarding does); MCP connections need no
stickiness.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request

from ..runtime.cluster import FORWARDED_HEADER, ForwardCall
from ..runtime.errors import ApiError
from ..runtime.registry import openai_name

log = logging.getLogger(__name__)

__all__ = ["bp", "init_app"]

bp = Blueprint("mcp", __name__)
SESSION_HEADER = "Mcp-Session-Id"
_SESSION_ID = re.compile(r"mcp-([0-9a-f]{32})\.([0-9a-f]{32})")
_CONNECT_TIMEOUT = 2.0
_TEMPORARY = "mcp-tmp-"


# -- connection ids ------------------------------------------------------------------
def _key(app: Flask) -> bytes:
    key = app.extensions.get("agentflow_mcp_key")
    if key is None:
        rt = app.extensions["agentflow"]
        token = rt.config.forward_token
        if token:
            key = hashlib.sha256(b"agentflow-mcp-session:" + token.encode()).digest()
        else:
            path = Path(rt.config.data_dir) / "mcp" / "session.key"
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
            except FileExistsError:
                pass
            key = hashlib.sha256(path.read_text().strip().encode()).digest()
        app.extensions["agentflow_mcp_key"] = key
    return key


def _new_session_id(app: Flask) -> str:
    raw = uuid.uuid4().hex
    return f"mcp-{raw}.{hmac.new(_key(app), raw.encode(), 'sha256').hexdigest()[:32]}"


def _worker_of_session(app: Flask, session_id: str) -> str | None:
    match = _SESSION_ID.fullmatch(session_id or "")
    if match is None:
        return None
    expected = hmac.new(_key(app), match.group(1).encode(), "sha256").hexdigest()[:32]
    return f"mcp-{match.group(1)}" if hmac.compare_digest(expected, match.group(2)) else None


# -- the gateway: tools and calls of this node's runtime -------------------------------
class _RuntimeGateway:
    def __init__(self, app: Flask):
        self.app = app

    @property
    def runtime(self):
        return self.app.extensions["agentflow"]

    def tools(self) -> list[dict]:
        return [{"name": s.full_name, "offered": openai_name(s), "description": s.description,
                 "parameters": s.parameters, "annotations": s.annotations}
                for s in self.runtime.registry.list_specs()]

    def call(self, worker_id: str, action: str, arguments: dict, trace_id: str) -> dict:
        rt = self.runtime
        with self.app.app_context():
            try:
                if not worker_id.startswith(_TEMPORARY):  # the connection's sessions: state kept across calls
                    spec = rt.registry.resolve(action)
                    if spec.needs_session:
                        rt.sessions.create(worker_id, spec.resource_type)
            except ApiError as err:  # unknown tool (the executor reports it, audited) or a session that fails
                if err.code != 1001:
                    return {"code": err.code, "message": err.message, "data": err.data, "meta": {}}
            try:
                return rt.executor.execute(worker_id=worker_id, action=action, params=arguments, trace_id=trace_id,
                                           forwardable=True)
            except ForwardCall as moved:
                return _forward(rt, moved, "/execute", {"worker_id": worker_id, "action": action,
                                                        "params": arguments, "trace_id": trace_id})

    def end(self, worker_id: str) -> int:
        rt = self.runtime
        ended = 0
        with self.app.app_context():
            for session in rt.sessions.list(worker_id):
                try:
                    rt.sessions.destroy(worker_id, session["resource_type"])
                    ended += 1
                except ForwardCall as moved:
                    answer = _forward(rt, moved, "/session/destroy",
                                      {"worker_id": worker_id, "resource_type": session["resource_type"]})
                    ended += answer.get("code") == 0
                except ApiError as err:
                    log.info("MCP connection end: session %s: %s", session["session_id"], err.message)
        return ended


def _forward(rt, moved: ForwardCall, path: str, body: dict) -> dict:
    """Run ``body`` on the node that owns the session; its envelope (or a 1003/2004 one)."""
    import requests

    from .forward import _http, _unsent

    headers = {FORWARDED_HEADER: rt.cluster.node_id, "Content-Type": "application/json"}
    if rt.config.forward_token:
        headers["Authorization"] = f"Bearer {rt.config.forward_token}"
    while True:
        try:
            answer = _http().post(moved.node.url + path, data=json.dumps(body), headers=headers,
                                  timeout=(_CONNECT_TIMEOUT, rt.config.max_call_timeout + 60), allow_redirects=False)
            return answer.json()
        except requests.ConnectionError as err:
            if not _unsent(err) or rt.cluster.is_gone(moved.node.node_id):
                return {"code": 2004 if not _unsent(err) else 1003, "data": {"node_id": moved.node.node_id},
                        "message": f"node {moved.node.node_id}, which runs {moved.what}, could not be reached "
                                   f"({type(err).__name__})", "meta": {}}
            time.sleep(0.2)
        except (requests.Timeout, ValueError) as err:
            return {"code": 2004, "data": {"node_id": moved.node.node_id, "outcome": "unknown"},
                    "message": f"node {moved.node.node_id} did not answer the forwarded call ({type(err).__name__})",
                    "meta": {}}


# -- the bridge: the SDK's ASGI session manager on a loop of its own -------------------
class _Bridge:
    def __init__(self, app: Flask):
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        from ..mcp.server import build_server

        self.gateway = _RuntimeGateway(app)
        server = build_server(self.gateway, self._worker_of, legacy_only=True)
        # Host and Origin are checked by the server's own guard before this view runs.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        self.manager = StreamableHTTPSessionManager(server, json_response=True, stateless=True,
                                                    security_settings=security,
                                                    max_request_body_size=app.config["MAX_CONTENT_LENGTH"])
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), name="agentflow-mcp-http", daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("the MCP endpoint's event loop did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            async with self.manager.run():
                ready.set()
                await asyncio.Event().wait()

        self.loop.run_until_complete(main())

    @staticmethod
    def _worker_of(ctx) -> tuple[str, str]:
        state = getattr(getattr(ctx, "request", None), "scope", {}).get("state", {}).get("agentflow")
        if not state:  # no HTTP request behind it: cannot happen on this endpoint
            worker = f"mcp-{uuid.uuid4().hex}"
            return worker, worker
        return state["worker_id"], state["trace_id"]

    def handle(self, scope: dict, body: bytes, timeout: float) -> tuple[int, list, bytes]:
        sent = {"status": 500, "headers": [], "body": []}
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected until the answer

        async def send(message):
            if message["type"] == "http.response.start":
                sent["status"], sent["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                sent["body"].append(message.get("body", b""))

        future = asyncio.run_coroutine_threadsafe(self.manager.handle_request(scope, receive, send), self.loop)
        future.result(timeout)
        return sent["status"], sent["headers"], b"".join(sent["body"])


def _bridge() -> _Bridge:
    app = current_app._get_current_object()
    with _lock:
        bridge = app.extensions.get("agentflow_mcp")
        if bridge is None:
            bridge = app.extensions["agentflow_mcp"] = _Bridge(app)
    return bridge


_lock = threading.Lock()


def _scope(worker_id: str, trace_id: str) -> dict:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
            "scheme": request.scheme, "path": "/mcp", "raw_path": b"/mcp",
            "query_string": request.query_string, "root_path": "", "headers": headers,
            "server": (request.host.rsplit(":", 1)[0], int(request.environ.get("SERVER_PORT") or 0)),
            "client": (request.remote_addr or "", 0),
            "state": {"agentflow": {"worker_id": worker_id, "trace_id": trace_id}}}


def _is_initialize(body: bytes) -> bool:
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("method") == "initialize" and "id" in message


def _not_found() -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found: this "
            "Mcp-Session-Id was not issued by this server (or is malformed); initialize a new session"}}
    return Response(json.dumps(body), status=404, mimetype="application/json")


@bp.route("/mcp", methods=["POST", "GET", "DELETE"])
def mcp():
    try:
        bridge = _bridge()
    except ImportError:
        return Response(json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": -32603, "message": "the MCP endpoint needs the mcp extra: pip install 'agentflow[mcp]'"}}),
            status=503, mimetype="application/json")
    app = current_app._get_current_object()
    given = request.headers.get(SESSION_HEADER)
    worker = _worker_of_session(app, given) if given else None
    if given and worker is None:
        return _not_found()
    if request.method == "GET":  # no server-initiated stream: everything is answered on its POST
        return Response(status=405, headers={"Allow": "POST, DELETE"})
    if request.method == "DELETE":
        if worker is None:
            return Response(json.dumps({"error": "DELETE needs the Mcp-Session-Id of the session to end"}),
                            status=400, mimetype="application/json")
        ended = bridge.gateway.end(worker)
        log.info("MCP session %s ended: %d AgentFlow session(s) destroyed", worker, ended)
        return Response(status=200)
    body = request.get_data(cache=True)
    opening = given is None and _is_initialize(body)
    new_id = _new_session_id(app) if opening else None
    if new_id is not None:
        worker = _worker_of_session(app, new_id)
    temporary = worker is None
    worker = worker or f"{_TEMPORARY}{uuid.uuid4().hex}"
    trace_id = worker.rsplit("-", 1)[1]
    timeout = app.extensions["agentflow"].config.max_call_timeout + 60
    try:
        status, headers, answer = bridge.handle(_scope(worker, trace_id), body, timeout)
    finally:
        if temporary:
            bridge.gateway.end(worker)
    response = Response(answer, status=status)
    for name, value in headers:
        key = name.decode("latin-1")
        if key.lower() not in ("content-length", "mcp-session-id"):
            response.headers[key] = value.decode("latin-1")
    if new_id is not None and status == 200:
        response.headers[SESSION_HEADER] = new_id
    return response


def init_app(app: Flask) -> None:
    """Serve ``/mcp`` (the bridge starts on the first request, in the worker that gets it)."""
    app.register_blueprint(bp)
