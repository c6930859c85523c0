"""The AgentFlow sandbox as an MCP server.

- :mod:`.server` — the tools and results in MCP terms (the SDK's low-level server).
- :mod:`.stdio`  — ``agentflow mcp serve``: one stdio connection = one worker.

The Streamable HTTP endpoint ``/mcp`` of the sandbox server is in
:mod:`agentflow.server.mcp_endpoint` (HTTP code stays in the server package). MCP
servers used *as* AgentFlow tools are the ``mcp`` resource: :mod:`agentflow.tools.mcp`.
"""
from __future__ import annotations

from .server import Gateway, build_server, envelope_to_result
from .stdio import SandboxGateway, serve_stdio

__all__ = ["Gateway", "SandboxGateway", "build_server", "envelope_to_result", "serve_stdio"]
