"""GET /tools: the tool list, plain or ready for OpenAI tool calling."""
from __future__ import annotations

from flask import Blueprint

from ...runtime.registry import openai_name
from ..envelope import envelope, json_response, load_query, runtime
from ..schemas import ToolsQuery

bp = Blueprint("tools", __name__)
_query = ToolsQuery()


@bp.get("/tools")
def list_tools():
    query = load_query(_query)
    specs = runtime().registry.list_specs(include_hidden=query["include_hidden"])
    if query["format"] == "openai":
        tools = [{"type": "function", "function": {"name": openai_name(s), "description": s.description,
                                                   "parameters": s.parameters}} for s in specs]
    else:
        tools = [{"name": s.full_name, "description": s.description, "resource_type": s.resource_type,
                  "parameters": s.parameters, "aliases": [openai_name(s), s.full_name.replace(":", "_")],
                  "default_timeout": s.default_timeout, "hidden": s.hidden,
                  "needs_session": s.needs_session, **({"annotations": s.annotations} if s.annotations else {})}
                 for s in specs]
    return json_response(envelope({"tools": tools, "total": len(tools)}))
