"""The ``mcp`` resource: every tool of the configured MCP servers, as ``mcp:<server>.<tool>``.

Where each kind of server runs:

- **stdio, per session** (the default): a child of the session's supervisor, inside the
  session's jail (its uid, cgroup, workspace, no network unless ``network: full``),
  started on the session's first call to it (or at session create with
  ``start: "session"``), ended with the session. Any gunicorn worker reaches it through
  the supervisor's socket (:mod:`.host` runs the SDK client there).
- **stdio, shared** (``shared: true``): one per node, in a jail of its own that sees no
  session's workspace (:mod:`.shared`); every session's calls go to it.
- **url** (Streamable HTTP): reached from the server process, one MCP connection per
  call (:mod:`.remote`).

The tool list is discovered when the backend is built (once per server start, shared
by the workers through a file in the data dir; see :mod:`.discovery`), so a server
that does not start, or is not an MCP server, stops the sandbox server from starting
with a message that says which and why.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from ...isolation import Limits, SupervisorError, SupervisorTimeout
from ..base import Backend, SessionFailed, SessionInfo, ToolContext, ToolError, ToolSpec, ToolTimeout
from . import discovery, remote
from .config import RESOURCE_KEYS, ServerSpec, install_dirs, parse_config
from .content import MalformedResult, result_data, scrub

log = logging.getLogger(__name__)

_DEFAULTS = Limits(memory_mb=2048, max_processes=256, disk_mb=1024, file_size_mb=256, cpu_seconds=3600)
_METHOD_PREFIX = "mcp_tool__"
_JAILED_LOGS = "/tmp/.agentflow-mcp"  # the jail's private /tmp
_REPLY_CAP = 64 << 20


class McpBackend(Backend):
    name = "mcp"
    description = "The tools of the configured MCP servers (stdio servers run in the session's sandbox)"
    config_keys = RESOURCE_KEYS

    def check_config(self) -> None:
        super().check_config()
        self.mcp = parse_config(self.config, self.name)
        self.servers: dict[str, ServerSpec] = self.mcp.servers
        self.secrets = sorted({s for spec in self.servers.values() for s in spec.secrets()}, key=len, reverse=True)
        stdio = [s for s in self.servers.values() if s.transport == "stdio"]
        extra = [p for spec in stdio for p in install_dirs(spec)]
        self.confine = self.confinement(_DEFAULTS, extra_read_only=extra) if stdio else None
        self._tools: dict[str, tuple[ServerSpec, str]] = {}
        self._specs: list[ToolSpec] = []
        from .shared import SharedServers

        self.shared = SharedServers(self)
        found = discovery.discover(self)
        for spec in self.servers.values():
            for tool in found.get(spec.name, []):
                self._add_tool(spec, tool)

    def _add_tool(self, spec: ServerSpec, tool: dict) -> None:
        name = str(tool.get("name") or "")
        full = f"{spec.name}.{name}"
        if not name or full.lower() in {t.lower() for t in self._tools}:
            log.warning("mcp server %s: tool %r skipped (empty, or its name differs from another only in case)",
                        spec.name, name)
            return
        schema = tool.get("inputSchema") if isinstance(tool.get("inputSchema"), dict) else {}
        schema = {**schema, "type": "object"}
        schema.setdefault("properties", {})
        title = tool.get("title") or (tool.get("annotations") or {}).get("title")
        description = (tool.get("description") or title or name).strip()
        if spec.description:
            description = f"{description} (MCP server '{spec.name}': {spec.description})"
        key = _METHOD_PREFIX + str(len(self._specs))
        self._tools[key] = (spec, name)
        needs_session = spec.transport == "stdio" and not spec.shared
        self._specs.append(ToolSpec(
            resource_type=self.name, name=full, description=description, parameters=schema, method_name=key,
            default_timeout=spec.timeout, max_timeout=spec.max_timeout, needs_session=needs_session,
            annotations={k: v for k, v in {"title": title, **(tool.get("annotations") or {}),
                                           "mcp_server": spec.name, "mcp_tool": name}.items() if v is not None},
        ))

    def tool_specs(self) -> list[ToolSpec]:  # noqa: D102 - discovered, not declared: per instance
        return list(self._specs)

    def __getattr__(self, attr: str):
        if attr.startswith(_METHOD_PREFIX):
            tools = self.__dict__.get("_tools", {})
            if attr in tools:
                spec, tool = tools[attr]
                return functools.partial(self._call, spec, tool)
        raise AttributeError(attr)

    def describe_servers(self) -> dict:
        return {name: spec.describe() for name, spec in self.servers.items()}

    # -- sessions ----------------------------------------------------------------
    @property
    def per_session(self) -> list[ServerSpec]:
        return [s for s in self.servers.values() if s.transport == "stdio" and not s.shared]

    def jail_env(self, workspace: Path) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workspace), "TERM": "dumb"}

    def log_dir(self, session: SessionInfo) -> str:
        return _JAILED_LOGS if self.confine.confined else str(Path(session.workspace) / ".mcp")

    def create_session(self, session: SessionInfo) -> None:
        if not self.per_session:
            return
        try:
            supervisor = self.confine.start(session, self.jail_env(session.workspace),
                                            startup_timeout=max(s.startup_timeout for s in self.per_session))
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003
            self.confine.stop(session)
            raise SessionFailed(f"the MCP session sandbox did not start: {err}") from None
        for spec in self.per_session:
            if spec.start != "session":
                continue
            reply = self.host_request(supervisor, spec, session, "list", timeout=spec.startup_timeout)
            if reply.get("status") != "ok":
                self.confine.stop(session)
                raise SessionFailed(f"MCP server '{spec.name}' did not start: {reply.get('error')}")

    def destroy_session(self, session: SessionInfo) -> None:
        if self.confine is not None and self.per_session:
            self.confine.stop(session)

    def close(self) -> None:
        self.shared.close()

    # -- calls -------------------------------------------------------------------
    def host_request(self, supervisor, spec: ServerSpec, session: SessionInfo, action: str, *, timeout: float,
                     **payload) -> dict:
        """One request to the MCP host in a jail's supervisor; the host's answer."""
        wait = timeout + spec.startup_timeout + spec.cancel_grace + 10
        return supervisor.request("mcp", wait, action=action, server=spec.name, spec=spec.launch(),
                                  timeout=timeout, startup_timeout=spec.startup_timeout,
                                  cancel_grace=spec.cancel_grace, log_dir=self.log_dir(session), **payload)

    def _call(self, spec: ServerSpec, tool: str, ctx: ToolContext, **arguments) -> dict:
        if spec.transport == "http":
            reply = remote.call_tool(spec, tool, arguments, ctx.remaining)
        else:
            reply = self._call_in_jail(spec, tool, ctx, arguments)
        return scrub(self._answer(spec, tool, reply, ctx), self.secrets)

    def _call_in_jail(self, spec: ServerSpec, tool: str, ctx: ToolContext, arguments: dict) -> dict:
        if spec.shared:
            supervisor, session = self.shared.supervisor(spec)
        else:
            session = ctx.session
            supervisor = self.confine.attach(session, max_reply_bytes=_REPLY_CAP)
        try:
            return self.host_request(supervisor, spec, session, "call", timeout=ctx.remaining, tool=tool,
                                     arguments=arguments)
        except SupervisorTimeout:
            raise ToolTimeout(f"MCP tool '{tool}' timed out after {ctx.timeout:g} s and the sandbox running "
                              f"server '{spec.name}' did not answer", {"server": spec.name}) from None
        except SupervisorError as err:
            if spec.shared:
                self.shared.forget(spec)
            raise ToolError(f"the sandbox running MCP server '{spec.name}' failed: {err}"
                            + ("" if spec.shared else "; destroy the session and create a new one"),
                            {"server": spec.name, "sandbox_failed": True}) from None

    def _answer(self, spec: ServerSpec, tool: str, reply: dict, ctx: ToolContext) -> dict:
        status = reply.get("status")
        extra = {"server": spec.name, "tool": tool}
        if reply.get("progress"):
            extra["progress"] = list(reply["progress"])[:100]
        if reply.get("restart_reason"):
            extra["server_restarted"] = True
            extra["restart_reason"] = str(reply["restart_reason"])[:2000]
        if status == "timeout":
            extra["cancelled"] = True
            if reply.get("killed"):
                extra["server_killed"] = True
                raise ToolTimeout(f"MCP tool '{tool}' timed out after {ctx.timeout:g} s; the request was cancelled "
                                  f"and server '{spec.name}' was killed because {reply.get('kill_reason')} (the next "
                                  "call starts it again)", extra)
            raise ToolTimeout(f"MCP tool '{tool}' timed out after {ctx.timeout:g} s; the request was cancelled "
                              f"(server '{spec.name}' keeps running)", extra)
        if status in ("start_failed", "died", "protocol_error", "bad_request"):
            what = {"start_failed": f"MCP server '{spec.name}' could not be started",
                    "died": f"MCP server '{spec.name}' failed", "protocol_error": f"MCP server '{spec.name}' refused "
                    f"the call to '{tool}'", "bad_request": "the MCP host refused the request"}[status]
            extra["mcp_status"] = status
            raise ToolError(f"{what}: {str(reply.get('error'))[:4000]}", extra)
        if status != "ok" or not isinstance(reply.get("result"), dict):
            raise ToolError(f"MCP server '{spec.name}' gave no result", extra)
        try:
            data = result_data(reply["result"], ctx.max_output_bytes)
        except MalformedResult as err:
            raise ToolError(f"MCP server '{spec.name}': {err}", extra) from None
        data.update(extra)
        if data["is_error"]:
            text = data.get("text") or "(the server gave no text)"
            raise ToolError(f"MCP tool '{tool}' failed: {text[:4000]}", data)
        return data

