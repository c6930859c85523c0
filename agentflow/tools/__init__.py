"""Tool backends, one module per resource type. Backends never import Flask.

``BACKENDS`` maps a resource type to its backend class (imported on first use, so an
optional backend's dependencies are only needed when it is enabled).
"""
from __future__ import annotations

import importlib

from .base import Backend, BackendContext, ToolContext, ToolError, ToolTimeout, tool

BACKENDS: dict[str, str] = {
    "bash": "agentflow.tools.bash:BashBackend",
    "diag": "agentflow.tools.diag:DiagBackend",
    "code": "agentflow.tools.code:CodeBackend",
    "ds": "agentflow.tools.ds:DsBackend",
    "rag": "agentflow.tools.rag:RagBackend",
    "web": "agentflow.tools.web:WebBackend",
    "text2sql": "agentflow.tools.text2sql:Text2SQLBackend",
    "doc": "agentflow.tools.doc:DocBackend",
    # GUI backends need Debian packages (xvfb, xdotool, openbox, chromium): enabled by a config.
    "vm": "agentflow.tools.gui.vm:VmBackend",
    "browser": "agentflow.tools.gui.browser:BrowserBackend",
    # MCP servers as tools (the `mcp` extra; servers are configured, so enabled by a config).
    "mcp": "agentflow.tools.mcp.backend:McpBackend",
}

# Enabled when a server runs without a config file: every backend that works offline
# with what ships in the repository.
DEFAULT_RESOURCES: list[str] = ["bash", "diag", "rag", "web", "code", "text2sql", "doc", "ds"]


class UnknownResource(KeyError):
    """No backend is known under this resource type."""


def backend_class(resource_type: str) -> type[Backend]:
    try:
        target = BACKENDS[resource_type]
    except KeyError:
        raise UnknownResource(resource_type) from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "BACKENDS",
    "DEFAULT_RESOURCES",
    "Backend",
    "BackendContext",
    "ToolContext",
    "ToolError",
    "ToolTimeout",
    "UnknownResource",
    "backend_class",
    "tool",
]
