"""``agentflow mcp serve``: the sandbox's tools for a desktop MCP client, over stdio.

The process is one MCP connection, so it is one AgentFlow ``worker_id``: the shell's
directory and exports, Python variables and a desktop persist across its calls. It
talks to a sandbox server (``--server-url``, or one it starts itself) through the
Python client, so every call is a normal ``/execute`` — validated, audited (with this
connection's id as the trace), forwarded in a cluster — and when the client closes the
connection (stdin ends) the worker's sessions are destroyed.
"""
from __future__ import annotations

import fnmatch
import logging
import uuid

from .server import ToolEntry, build_server

log = logging.getLogger(__name__)

__all__ = ["SandboxGateway", "serve_stdio"]


def _wanted(name: str, patterns: list[str]) -> bool:
    spellings = [name.lower(), name.replace(":", "-", 1).lower(), name.replace(":", "_", 1).lower()]
    return not patterns or any(fnmatch.fnmatchcase(s, p.lower()) for p in patterns for s in spellings)


class SandboxGateway:
    """The tools of a sandbox server, through :class:`agentflow.sandbox.Sandbox`."""

    def __init__(self, sandbox, patterns: list[str] | None = None):
        self.sandbox = sandbox
        self.patterns = list(patterns or [])
        self._resource_of: dict[str, str] = {}
        """Every spelling of a tool that needs a session → its resource type."""

    def tools(self) -> list[ToolEntry]:
        listed = self.sandbox.list_tools_sync()["data"]["tools"]
        for t in listed:
            if t.get("needs_session"):
                for name in [t["name"], *(t.get("aliases") or [])]:
                    self._resource_of[name.lower()] = t["resource_type"]
        return [{"name": t["name"], "offered": (t.get("aliases") or [t["name"].replace(":", "-", 1)])[0],
                 "description": t.get("description", ""), "parameters": t.get("parameters"),
                 "annotations": t.get("annotations")} for t in listed if _wanted(t["name"], self.patterns)]

    def call(self, worker_id: str, action: str, arguments: dict, trace_id: str) -> dict:
        from ..sandbox.errors import SandboxError

        try:
            if not self._resource_of:
                self.tools()
            resource = self._resource_of.get(action.lower())
            if resource is not None:  # the connection's session: state kept across its calls
                self.sandbox.create_session_sync(resource)
            return self.sandbox.execute_sync(action, arguments, trace_id=trace_id)
        except SandboxError as err:  # a 1xxx (unknown tool, bad parameter, session) or an unreachable server
            return {"code": err.code or 5000, "message": str(err), "data": dict(err.data or {})}

    def end(self) -> int:
        """Destroy this connection's sessions; how many."""
        ended = 0
        try:
            sessions = self.sandbox.list_sessions_sync()["data"]["sessions"]
        except Exception:  # noqa: BLE001 - the server may be gone already
            log.warning("could not list the sessions of %s to end them", self.sandbox.worker_id)
            return 0
        for session in sessions:
            try:
                self.sandbox.destroy_session_sync(session["resource_type"])
                ended += 1
            except Exception:  # noqa: BLE001 - the others still end
                log.warning("could not end session %s", session.get("session_id"))
        return ended


def serve_stdio(sandbox, patterns: list[str] | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes it, then end the sessions."""
    import anyio
    from mcp.server.stdio import stdio_server

    gateway = SandboxGateway(sandbox, patterns)
    connection = f"mcp-{uuid.uuid4().hex}"
    server = build_server(gateway, lambda ctx: (sandbox.worker_id, connection))

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(run)
    finally:
        ended = gateway.end()
        log.info("MCP connection closed: ended %d session(s) of %s", ended, sandbox.worker_id)
