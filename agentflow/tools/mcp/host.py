"""The MCP client side that runs *inside* a session's jail, in its supervisor.

A stdio MCP server is a child of the session supervisor (:mod:`agentflow.isolation.supervisor`),
so it lives in the session's jail, cgroup and uid, and ends with the session. The
supervisor hands each ``mcp`` request to :func:`handle`, which keeps one connection per
configured server (the official SDK's :class:`mcp.Client` over :func:`mcp.stdio_client`)
on an event loop of its own and answers with plain JSON: the server's tool list, or a
tool result in the protocol's wire form. Any server process reaches a session's MCP
servers through the supervisor's socket, as it reaches the session's kernel.

A call that runs out of time is cancelled through the SDK (it sends
``notifications/cancelled``); a server that then keeps working on it — it still sends
progress for it, or it no longer answers a ping within ``cancel_grace`` seconds — is
killed (its whole process group), and the next call starts it again.

Nothing here is trusted by the server: this code runs as the session.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

_STDERR_TAIL = 2000

__all__ = ["handle"]


def _spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class _Connection:
    """One live MCP server (its process and SDK client), driven by a task of the host loop."""

    def __init__(self, name: str, spec: dict, env: dict[str, str], workspace: str, log_dir: Path):
        self.name, self.spec, self.key = name, spec, _spec_key(spec)
        self.env, self.workspace = env, workspace
        self.log_path = log_dir / f"{name}.log"
        self.client = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.done = asyncio.Event()
        self.error: str | None = None
        self.in_flight = 0
        self.last_progress = 0.0
        self.task: asyncio.Task | None = None

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/progress":
            self.last_progress = time.monotonic()

    async def run(self) -> None:
        from mcp import Client, StdioServerParameters, stdio_client

        cwd = self.spec.get("cwd") or self.workspace
        if not os.path.isabs(cwd):
            cwd = os.path.join(self.workspace, cwd)
        params = StdioServerParameters(command=self.spec["command"], args=list(self.spec.get("args") or []),
                                       env={**self.env, **(self.spec.get("env") or {})}, cwd=cwd)
        try:
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as errlog:
                async with Client(stdio_client(params, errlog=errlog), message_handler=self._on_message) as client:
                    self.client = client
                    self.ready.set()
                    await self.stop.wait()
        except BaseException as err:  # noqa: BLE001 - reported to the caller, the host lives on
            if isinstance(err, asyncio.CancelledError):
                self.error = self.error or "the MCP server was stopped"
            else:
                self.error = self.error or _describe(err)
        finally:
            self.client = None
            self.ready.set()
            self.done.set()

    def stderr_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()[-_STDERR_TAIL:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    async def close(self, timeout: float = 6.0) -> None:
        """End the server: the SDK closes its stdin, then kills its process group."""
        self.stop.set()
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            if self.task is not None:
                self.task.cancel()


def _describe(err: BaseException) -> str:
    """A one-line reason, looking inside the SDK's exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Host:
    """The supervisor's MCP connections and the event loop they run on."""

    def __init__(self, workspace: str, log_dir: str | None):
        self.workspace = workspace
        self.loop = asyncio.new_event_loop()
        self.connections: dict[str, _Connection] = {}
        self.lost: dict[str, str] = {}
        self.lock: asyncio.Lock | None = None
        self.log_dir = Path(log_dir) if log_dir else Path(workspace) / ".mcp"
        threading.Thread(target=self.loop.run_forever, name="agentflow-mcp", daemon=True).start()

    def run(self, coro, timeout: float) -> dict:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    # -- connections ---------------------------------------------------------------
    async def connection(self, name: str, spec: dict, env: dict[str, str], startup_timeout: float
                         ) -> tuple[_Connection | None, str | None, str | None]:
        """(the live connection, why it was restarted or None, why it could not start or None)."""
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            conn = self.connections.get(name)
            restarted = None
            if conn is not None and (conn.key != _spec_key(spec) or conn.done.is_set()):
                restarted = conn.error or "the MCP server had exited"
                if conn.key != _spec_key(spec):
                    restarted = "the server's configuration changed"
                await conn.close()
                del self.connections[name]
                conn = None
            if conn is None:
                restarted = restarted or self.lost.pop(name, None)
                self.log_dir.mkdir(parents=True, exist_ok=True)
                conn = _Connection(name, spec, env, self.workspace, self.log_dir)
                conn.task = asyncio.ensure_future(conn.run())
                self.connections[name] = conn
        try:
            await asyncio.wait_for(conn.ready.wait(), startup_timeout)
        except asyncio.TimeoutError:
            conn.error = f"the MCP server did not finish its handshake within {startup_timeout:g} s"
            await self.drop(name, conn, conn.error)
            return None, restarted, _with_stderr(conn.error, conn)
        if conn.client is None:
            await self.drop(name, conn, None)
            return None, restarted, _with_stderr(f"the MCP server did not start: {conn.error}", conn)
        return conn, restarted, None

    async def drop(self, name: str, conn: _Connection, why: str | None, wait: bool = False) -> None:
        """Forget the connection and end its server (in the background unless ``wait``:
        the SDK gives a server 2 s to exit after its stdin closes, then kills its group)."""
        if self.connections.get(name) is conn:
            del self.connections[name]
        if why:
            self.lost[name] = why
        if wait:
            await conn.close()
        else:
            asyncio.ensure_future(conn.close())

    # -- requests --------------------------------------------------------------------
    async def list_tools(self, req: dict, env: dict[str, str]) -> dict:
        conn, _, error = await self.connection(req["server"], req["spec"], env, float(req["startup_timeout"]))
        if conn is None:
            return {"status": "start_failed", "error": error}
        tools, cursor = [], None
        for _ in range(100):
            page = await asyncio.wait_for(conn.client.list_tools(cursor=cursor), float(req["timeout"]))
            tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        info = conn.client.server_info
        return {"status": "ok", "tools": tools, "protocol_version": conn.client.protocol_version,
                "server_info": info.model_dump(mode="json", exclude_none=True) if info else None}

    async def call(self, req: dict, env: dict[str, str]) -> dict:
        from mcp import MCPError

        name, timeout = req["server"], float(req["timeout"])
        started = time.monotonic()
        conn, restarted, error = await self.connection(name, req["spec"], env, float(req["startup_timeout"]))
        if conn is None:
            return {"status": "start_failed", "error": error, "restart_reason": restarted}
        progress: list[dict] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            if len(progress) < 100:
                progress.append({"progress": value, "total": total, "message": message})

        left = max(0.05, timeout - (time.monotonic() - started))
        conn.in_flight += 1
        try:
            result = await conn.client.call_tool(req["tool"], req.get("arguments") or {}, read_timeout_seconds=left,
                                                 progress_callback=on_progress)
        except MCPError as err:
            if err.code == -32001 or "timed out" in str(err):  # REQUEST_TIMEOUT: the SDK sent a cancel
                conn.in_flight -= 1
                killed, why = await self._after_timeout(name, conn, float(req.get("cancel_grace", 2)))
                return {"status": "timeout", "killed": killed, "kill_reason": why, "progress": progress,
                        "restart_reason": restarted}
            conn.in_flight -= 1
            return {"status": "protocol_error", "error": f"{err} (code {err.code})", "progress": progress,
                    "restart_reason": restarted}
        except Exception as err:  # noqa: BLE001 - the connection broke: a clear answer, then a restart
            conn.in_flight -= 1
            why = _with_stderr(f"the MCP server failed during the call ({_describe(err)})", conn)
            await self.drop(name, conn, "the MCP server failed during the previous call")
            return {"status": "died", "error": why, "progress": progress, "restart_reason": restarted}
        conn.in_flight -= 1
        return {"status": "ok", "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
                "progress": progress, "restart_reason": restarted}

    async def _after_timeout(self, name: str, conn: _Connection, grace: float) -> tuple[bool, str | None]:
        """Kill the server if it ignores the cancel: it does not answer a ping within
        ``grace`` seconds, or it keeps sending progress (for the cancelled call) meanwhile."""
        cancelled_at = time.monotonic()
        why = None
        try:
            await asyncio.wait_for(conn.client.send_ping(), grace)
        except Exception:  # noqa: BLE001 - no answer, whatever the reason
            why = f"it did not answer a ping within {grace:g} s after the cancel"
        if why is None:
            await asyncio.sleep(max(0.0, grace - (time.monotonic() - cancelled_at)))
            if conn.in_flight == 0 and conn.last_progress > cancelled_at:
                why = "it kept sending progress for the cancelled call"
        if why is None:
            return False, None
        await self.drop(name, conn, f"the MCP server was killed after a timeout because {why}")
        return True, why

    async def stop(self, req: dict) -> dict:
        names = [req["server"]] if req.get("server") else list(self.connections)
        for name in names:
            conn = self.connections.get(name)
            if conn is not None:
                await self.drop(name, conn, None, wait=True)
        return {"status": "ok", "stopped": names}


def _with_stderr(message: str, conn: _Connection) -> str:
    tail = conn.stderr_tail()
    return f"{message}; its stderr: {tail}" if tail else message


_host: _Host | None = None
_host_lock = threading.Lock()


def handle(req: dict, env: dict[str, str], workspace: str) -> dict:
    """One ``mcp`` request of the supervisor: ``action`` is ``list``, ``call`` or ``stop``."""
    global _host
    with _host_lock:
        if _host is None:
            _host = _Host(workspace, req.get("log_dir"))
    host = _host
    action = req.get("action")
    wait = float(req.get("timeout", 30)) + float(req.get("startup_timeout", 30)) + float(req.get("cancel_grace", 2)) + 10
    if action == "list":
        return host.run(host.list_tools(req, env), wait)
    if action == "call":
        return host.run(host.call(req, env), wait)
    if action == "stop":
        return host.run(host.stop(req), 30)
    return {"status": "bad_request", "error": f"unknown mcp action {action!r}"}
