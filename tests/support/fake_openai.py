"""A scripted, OpenAI-compatible model server for tests (Flask on a free port, in a thread).

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` and answers each chat
request from a *script*, so tests of rollout, synthesis or anything else that talks to a
model through the ``openai`` package get deterministic replies without a real model.

A script is either

* a **function of the request** ``script(request: dict) -> reply`` — the usual choice:
  the reply depends only on the request's messages, so concurrent conversations get
  deterministic answers whatever the interleaving; or
* a **list of replies** played in order across all requests (the last one repeats).

A reply is one of

* a ``str`` — an assistant message with that text;
* :func:`tool_calls` ``(call(name, args), call(...), content=None)`` — one turn with one
  or more tool calls; ``args`` may be a dict (sent as JSON) or a raw string (to send
  malformed arguments), and ``name`` may be a tool that does not exist;
* :func:`http_error` ``(status, message, retry_after_ms=1)`` — an HTTP error such as
  429 or 500 (with ``retry-after-ms`` so the ``openai`` client's retries stay fast);
* a :class:`Reply` built directly (adds per-reply ``latency`` or custom ``usage``).

Helpers build scripts from parts of the conversation: :func:`by_turn` (reply by turn
number), :func:`fail_first` (the first *n* requests of each conversation fail with an
HTTP status), and the accessors :func:`first_user`, :func:`last_tool`, :func:`turn`.

Usage::

    from tests.support.fake_openai import FakeOpenAI, by_turn, call, tool_calls

    script = by_turn(tool_calls(call("bash-run", {"command": "echo 42"})),
                     lambda req: f"<answer>{last_tool(req)}</answer>")
    with FakeOpenAI(script, latency=0.05) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="x")
        ...
        assert len(fake.requests) == 2

Every request body is kept in ``fake.requests`` (thread-safe); ``fake.latency`` is a
fixed delay added to every chat reply (for concurrency measurements).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from typing import Any, Callable, Union

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = [
    "FakeOpenAI",
    "FakeOpenAIProcess",
    "Reply",
    "by_turn",
    "call",
    "fail_first",
    "first_user",
    "http_error",
    "last_tool",
    "tool_calls",
    "turn",
]


@dataclasses.dataclass
class Reply:
    """One scripted answer: a message (``content`` and/or ``tool_calls``) or an HTTP error."""

    content: str | None = None
    tool_calls: list[dict] = dataclasses.field(default_factory=list)
    status: int = 200
    error_message: str = ""
    retry_after_ms: int | None = None
    latency: float | None = None
    """Extra delay for this reply (default: the server's ``latency``)."""
    usage: dict | None = None
    finish_reason: str | None = None


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # no access log in test output
        pass


ReplyLike = Union[str, Reply, Callable[[dict], Any]]
_ids = itertools.count(1)


def call(name: str, arguments: dict | str | None = None, id: str | None = None) -> dict:
    """A tool call; ``arguments`` as a dict is sent as JSON, a string is sent verbatim."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": id or f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": args}}


def tool_calls(*calls: dict, content: str | None = None) -> Reply:
    """An assistant turn asking for every given :func:`call`."""
    return Reply(content=content, tool_calls=list(calls))


def http_error(status: int, message: str = "scripted error", retry_after_ms: int | None = 1) -> Reply:
    """Answer with HTTP ``status`` and an OpenAI-style error body."""
    return Reply(status=status, error_message=message, retry_after_ms=retry_after_ms)


def first_user(req: dict) -> str:
    """The text of the first user message (a conversation's natural key)."""
    for m in req.get("messages", []):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def last_tool(req: dict) -> str:
    """The content of the last ``tool`` message ('' if none)."""
    for m in reversed(req.get("messages", [])):
        if m.get("role") == "tool":
            return _text(m.get("content"))
    return ""


def turn(req: dict) -> int:
    """How many assistant messages the request already holds (0 on the first turn)."""
    return sum(1 for m in req.get("messages", []) if m.get("role") == "assistant")


def by_turn(*replies: ReplyLike) -> Callable[[dict], Any]:
    """A script answering turn *k* with ``replies[k]`` (the last one repeats). A reply
    may itself be a function of the request."""

    def script(req: dict):
        return replies[min(turn(req), len(replies) - 1)]

    return script


def fail_first(n: int, status: int, then: ReplyLike, key: Callable[[dict], str] = first_user) -> Callable[[dict], Any]:
    """The first ``n`` requests of each conversation (``key``) get HTTP ``status``; the
    rest are answered by ``then``."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def script(req: dict):
        with lock:
            k = key(req)
            seen[k] = seen.get(k, 0) + 1
            count = seen[k]
        return http_error(status, f"scripted {status} #{count}") if count <= n else then

    return script


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


class FakeOpenAI:
    """The fake server. Start with :meth:`start` or a ``with`` block.

    Args:
        script: Function of the request, or list of replies (see the module docstring).
        latency: Seconds every chat reply waits before it is sent.
        model: Model name listed by ``/v1/models``.
    """

    def __init__(self, script: ReplyLike | list | None = None, *, latency: float = 0.0, model: str = "fake-model"):
        self.script = script if script is not None else "ok"
        self.latency = latency
        self.model = model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._position = 0
        self._server = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        app = self._app()
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def chat_requests(self, key: Callable[[dict], str] = first_user) -> dict[str, int]:
        """Number of chat requests received per conversation key."""
        counts: dict[str, int] = {}
        with self._lock:
            for req in self.requests:
                counts[key(req)] = counts.get(key(req), 0) + 1
        return counts

    # ------------------------------------------------------------------ internals

    def _next_reply(self, req: dict) -> Reply:
        script = self.script
        if isinstance(script, list):
            with self._lock:
                item = script[min(self._position, len(script) - 1)]
                self._position += 1
        else:
            item = script
        while callable(item) and not isinstance(item, Reply):
            item = item(req)
        if isinstance(item, str) or item is None:
            return Reply(content=item or "")
        if isinstance(item, Reply):
            return item
        raise TypeError(f"script returned {type(item).__name__}, expected str or Reply")

    def _app(self) -> Flask:
        app = Flask("fake_openai")

        @app.get("/v1/models")
        def models():
            return jsonify({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "tests"}]})

        @app.post("/v1/chat/completions")
        def chat():
            req = request.get_json(force=True)
            with self._lock:
                self.requests.append(req)
            try:
                reply = self._next_reply(req)
            except Exception as err:  # a broken script shows as a 500 the test can read
                return jsonify({"error": {"message": f"fake script failed: {err!r}", "type": "server_error"}}), 500
            delay = self.latency if reply.latency is None else reply.latency
            if delay:
                time.sleep(delay)
            if reply.status != 200:
                headers = {"x-request-id": f"req_fake_{next(_ids)}"}
                if reply.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(reply.retry_after_ms)
                body = {"error": {"message": reply.error_message, "type": "scripted", "code": reply.status}}
                return Response(json.dumps(body), status=reply.status, headers=headers, mimetype="application/json")
            return jsonify(self._completion(req, reply))

        return app

    def _completion(self, req: dict, reply: Reply) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        prompt = sum(len(_text(m.get("content"))) for m in req.get("messages", [])) // 4 + 1
        completion = len(reply.content or "") // 4 + sum(len(c["function"]["arguments"]) for c in reply.tool_calls) // 4 + 1
        usage = reply.usage or {"prompt_tokens": prompt, "completion_tokens": completion,
                                "total_tokens": prompt + completion}
        return {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", self.model),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")}],
            "usage": usage,
        }


# ---------------------------------------------------------------------------- in its own process

class FakeOpenAIProcess:
    """The same scripted model, served from a process of its own by an asyncio server
    with HTTP/1.1 keep-alive: for throughput measurements.

    :class:`FakeOpenAI` runs in the caller's process (its request handling competes with
    the code under test for the GIL) on werkzeug's development server, which closes the
    connection after every reply and starts a thread per connection: every model call
    then pays a TCP connect and a thread start, which a real endpoint does not charge.
    Here any number of requests wait out ``latency`` concurrently (one ``asyncio.sleep``
    each, no thread), connections are kept alive, and the CPU the fake spends is outside
    the measured process. ``script`` must be picklable (a module-level function or a
    list); request bodies are not kept (there is no ``requests``), ``request_count()``
    says how many chat requests were served and ``connection_count()`` on how many
    connections.

    Usage::

        with FakeOpenAIProcess(script, latency=0.1) as fake:
            client = openai.OpenAI(base_url=fake.base_url, api_key="x")
    """

    def __init__(self, script: ReplyLike | list | None = None, *, latency: float = 0.0, model: str = "fake-model"):
        self.script, self.latency, self.model = script, latency, model
        self._proc = None
        self._count = self._connections = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIProcess":
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # the caller may already run threads
        parent, child = ctx.Pipe()
        self._count, self._connections = ctx.Value("q", 0, lock=True), ctx.Value("q", 0, lock=True)
        self._proc = ctx.Process(target=_serve_async, args=(self.script, self.latency, self.model, child,
                                                            self._count, self._connections),
                                 name="fake-openai", daemon=True)
        self._proc.start()
        if not parent.poll(60):
            self.stop()
            raise RuntimeError("the fake model process did not start within 60 s")
        self.port = parent.recv()
        return self

    def request_count(self) -> int:
        return self._count.value

    def connection_count(self) -> int:
        return self._connections.value

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(10)
            self._proc = None

    def __enter__(self) -> "FakeOpenAIProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


def _serve_async(script, latency: float, model: str, conn, count, connections) -> None:
    """The child process of :class:`FakeOpenAIProcess`: a minimal HTTP/1.1 server."""
    import asyncio

    fake = FakeOpenAI(script, latency=latency, model=model)  # its reply logic, not its server

    def respond(status: int, body: dict, headers: dict | None = None) -> bytes:
        data = json.dumps(body).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data

    async def answer(method: str, path: str, body: bytes) -> bytes:
        if method == "GET" and path.endswith("/v1/models"):
            return respond(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "tests"}]})
        if method != "POST" or not path.endswith("/v1/chat/completions"):
            return respond(404, {"error": {"message": f"no route {method} {path}"}})
        req = json.loads(body or b"{}")
        with count.get_lock():
            count.value += 1
        try:
            reply = fake._next_reply(req)
        except Exception as err:
            return respond(500, {"error": {"message": f"fake script failed: {err!r}", "type": "server_error"}})
        delay = latency if reply.latency is None else reply.latency
        if delay:
            await asyncio.sleep(delay)
        if reply.status != 200:
            headers = {"x-request-id": f"req_fake_{next(_ids)}"}
            if reply.retry_after_ms is not None:
                headers["retry-after-ms"] = str(reply.retry_after_ms)
            return respond(reply.status, {"error": {"message": reply.error_message, "type": "scripted",
                                                    "code": reply.status}}, headers)
        return respond(200, fake._completion(req, reply))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with connections.get_lock():
            connections.value += 1
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                writer.write(await answer(method, path.split("?", 1)[0], body))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())
