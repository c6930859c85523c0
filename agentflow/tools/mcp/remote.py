"""Streamable HTTP MCP servers (``url``), reached from the server process itself.

There is no process of ours to confine: the server is someone else's service. Each
call opens its own MCP connection (the SDK's :mod:`mcp.client.streamable_http`), calls
the tool and closes it, so any gunicorn worker serves any call and nothing about the
connection lives in one worker's memory. A server that keeps per-connection state
therefore sees a new connection per call (see docs/mcp.md).

Answers have the same shape as the in-jail host's (:mod:`.host`), so the backend maps
both the same way.
"""
from __future__ import annotations

import asyncio
import time

from .config import ServerSpec

__all__ = ["call_tool", "list_tools"]


async def _connect_and(spec: ServerSpec, timeout: float, work):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=dict(spec.headers), timeout=httpx2.Timeout(min(30.0, timeout), read=timeout),
                              trust_env=False)
    async with http:
        async with Client(streamable_http_client(spec.url, http_client=http)) as client:
            return await work(client)


def _describe(err: BaseException) -> str:
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def list_tools(spec: ServerSpec, timeout: float) -> dict:
    """``{status: ok, tools: [...]}`` or ``{status: start_failed, error}``."""

    async def work(client):
        tools, cursor = [], None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                break
        info = client.server_info
        return {"status": "ok", "tools": tools, "protocol_version": client.protocol_version,
                "server_info": info.model_dump(mode="json", exclude_none=True) if info else None}

    try:
        return asyncio.run(asyncio.wait_for(_connect_and(spec, timeout, work), timeout))
    except asyncio.TimeoutError:
        return {"status": "start_failed", "error": f"no answer within {timeout:g} s"}
    except Exception as err:  # noqa: BLE001 - reported as the server's start failure
        return {"status": "start_failed", "error": _describe(err)}


def call_tool(spec: ServerSpec, tool: str, arguments: dict, timeout: float) -> dict:
    """The tool's result as :mod:`.host` answers it (``ok``, ``timeout``, ``protocol_error``, ``died``)."""
    from mcp import MCPError

    progress: list[dict] = []
    started = time.monotonic()

    async def on_progress(value, total, message):
        if len(progress) < 100:
            progress.append({"progress": value, "total": total, "message": message})

    async def work(client):
        left = max(0.05, timeout - (time.monotonic() - started))
        return await client.call_tool(tool, arguments, read_timeout_seconds=left, progress_callback=on_progress)

    try:
        result = asyncio.run(asyncio.wait_for(_connect_and(spec, timeout + 5, work), timeout + 5))
    except MCPError as err:
        if err.code == -32001:
            return {"status": "timeout", "killed": False, "progress": progress}
        return {"status": "protocol_error", "error": f"{err} (code {err.code})", "progress": progress}
    except asyncio.TimeoutError:
        return {"status": "timeout", "killed": False, "progress": progress}
    except Exception as err:  # noqa: BLE001 - unreachable or broken server: a clear 2001
        while isinstance(err, BaseExceptionGroup) and err.exceptions:
            err = err.exceptions[0]
        if isinstance(err, MCPError):
            if err.code == -32001:
                return {"status": "timeout", "killed": False, "progress": progress}
            return {"status": "protocol_error", "error": f"{err} (code {err.code})", "progress": progress}
        return {"status": "died", "error": f"the MCP server at its url could not be used ({_describe(err)})",
                "progress": progress}
    return {"status": "ok", "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
            "progress": progress}
