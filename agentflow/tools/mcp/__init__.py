"""MCP servers as AgentFlow tools: the ``mcp`` resource (see :mod:`.backend`).

- :mod:`.config`    — the resource's config (ours, Claude Desktop's, the reference's).
- :mod:`.backend`   — ``McpBackend``: tool specs, sessions, result mapping.
- :mod:`.discovery` — each server's tool list, once per server start.
- :mod:`.host`      — the SDK client inside a session's jail (run by its supervisor).
- :mod:`.shared`    — servers run once per node.
- :mod:`.remote`    — Streamable HTTP servers.
- :mod:`.content`   — MCP results as our data.

Modules import the ``mcp`` SDK only when they use it, so the rest of AgentFlow imports
without the ``mcp`` extra.
"""
from __future__ import annotations

__all__ = ["McpBackend"]


def __getattr__(name: str):
    if name == "McpBackend":
        from .backend import McpBackend

        return McpBackend
    raise AttributeError(name)
