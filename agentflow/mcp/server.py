"""AgentFlow's tools as an MCP server (the official SDK's low-level :class:`mcp.server.Server`).

The transport-independent part, shared by ``agentflow mcp serve`` (stdio, :mod:`.stdio`)
and the sandbox server's ``/mcp`` endpoint (Streamable HTTP,
:mod:`agentflow.server.mcp_endpoint`). Both give it a :class:`Gateway`: how to list the
tools and how to run one call as a given AgentFlow ``worker_id``.

- Tools are offered under the names ``/tools?format=openai`` gives them (``bash-run``,
  ``mcp-time_get_current_time``): letters, digits, ``_`` and ``-`` only, which every MCP
  client and every model API takes. Any of our spellings (``bash:run``) is accepted too.
- A call's envelope becomes a ``CallToolResult``: its ``data`` as JSON text and as
  ``structuredContent``; images (``vm:screenshot``'s ``image``, ``code:run``'s
  ``images``, an MCP server's ``images``) as image content, not repeated in the text;
  a failed call (any code but 0) as ``isError`` with our message and data.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Protocol

__all__ = ["Gateway", "ToolEntry", "build_server", "envelope_to_result"]

ToolEntry = dict
"""``{name, offered, description, parameters, annotations?}``: one tool to offer."""

_ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


class Gateway(Protocol):
    """How the MCP server reaches AgentFlow's tools."""

    def tools(self) -> list[ToolEntry]:
        """The tools to offer (hidden ones left out)."""

    def call(self, worker_id: str, action: str, arguments: dict, trace_id: str) -> dict:
        """Run one call as ``worker_id``; the envelope (tool failures are envelopes too)."""


def _image_blocks(data: dict) -> tuple[dict, list[tuple[str, str]]]:
    """(data with image payloads replaced by a note, [(base64, mime type)…])."""
    images: list[tuple[str, str]] = []
    out = dict(data)
    if isinstance(out.get("image"), str) and len(out["image"]) > 64:
        mime = str(out.get("mime_type") or "image/png")
        images.append((out["image"], mime))
        out["image"] = f"<{mime}, returned as MCP image content #{len(images) - 1}>"
    if isinstance(out.get("images"), list):
        listed = []
        for item in out["images"]:
            payload = item.get("data") or item.get("image") if isinstance(item, dict) else None
            if isinstance(payload, str):
                mime = str(item.get("mime_type") or item.get("mime") or "image/png")
                images.append((payload, mime))
                listed.append({"mime_type": mime, "image_content": len(images) - 1})
            else:
                listed.append(item)
        out["images"] = listed
    return out, images


def envelope_to_result(env: dict):
    """The ``CallToolResult`` for one AgentFlow envelope."""
    import mcp_types as types

    data = env.get("data") if isinstance(env.get("data"), dict) else {}
    data, images = _image_blocks(data)
    code = env.get("code", 5000)
    body: dict[str, Any] = dict(data)
    text = json.dumps(body, ensure_ascii=False, default=str)
    failed = code != 0
    if failed:
        body = {"code": code, "message": env.get("message", ""), "data": data}
        text = f"error {code}: {env.get('message', '')}\n" + json.dumps(body, ensure_ascii=False, default=str)
    elif isinstance(data.get("exit_code"), int) and data["exit_code"] != 0:  # the command ran and failed
        failed = True
        text = f"the command exited with code {data['exit_code']}\n{text}"
    content: list = [types.TextContent(text=text)]
    content += [types.ImageContent(data=b64, mime_type=mime) for b64, mime in images]
    return types.CallToolResult(content=content, structured_content=body, is_error=failed)


def _tool(entry: ToolEntry):
    import mcp_types as types

    schema = dict(entry.get("parameters") or {"type": "object", "properties": {}})
    schema["type"] = "object"
    hints = {k: v for k, v in (entry.get("annotations") or {}).items() if k in _ANNOTATION_KEYS}
    return types.Tool(name=entry["offered"], description=entry.get("description") or entry["name"],
                      input_schema=schema,
                      annotations=types.ToolAnnotations.model_validate(hints) if hints else None)


def build_server(gateway: Gateway, worker_of: Callable[[Any], tuple[str, str]], *, name: str = "agentflow",
                 legacy_only: bool = False):
    """The SDK server offering ``gateway``'s tools.

    Args:
        worker_of: ``ctx -> (worker_id, trace_id)`` for a request (the connection's worker).
        legacy_only: advertise only the handshake-era protocol versions in
            ``server/discover``, so SDK clients open a session (``initialize``,
            ``Mcp-Session-Id``): the HTTP endpoint needs one to know the connection.
    """
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from ..version import __version__

    async def list_tools(ctx, params) -> types.ListToolsResult:
        entries = await anyio.to_thread.run_sync(gateway.tools)
        return types.ListToolsResult(tools=[_tool(e) for e in entries])

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        worker_id, trace_id = worker_of(ctx)
        env = await anyio.to_thread.run_sync(gateway.call, worker_id, params.name, dict(params.arguments or {}),
                                             trace_id)
        return envelope_to_result(env)

    server = Server(name, version=__version__, title="AgentFlow sandbox",
                    instructions="AgentFlow sandbox tools. State (the shell's directory and variables, Python "
                                 "variables, a desktop) persists across the calls of one connection.",
                    on_list_tools=list_tools, on_call_tool=call_tool)
    if legacy_only:
        from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

        async def discover(ctx, params) -> types.DiscoverResult:
            return types.DiscoverResult(supported_versions=list(HANDSHAKE_PROTOCOL_VERSIONS),
                                        capabilities=server.get_capabilities(protocol_version=ctx.protocol_version))

        server.add_request_handler("server/discover", types.RequestParams, discover)
    return server
