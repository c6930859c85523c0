"""Diagnostic tools, hidden from the default tool list: they measure the server itself."""
from __future__ import annotations

import time

from .base import Backend, ParamError, ToolContext, ToolError, ToolTimeout, tool


class DiagBackend(Backend):
    name = "diag"
    description = "Server diagnostics (hidden)"
    uses_sessions = False
    config_keys = frozenset({"fail_warmup"})

    class WarmupFailed(RuntimeError):
        """Raised by warmup when the config asks for it (tests the 2003 path)."""

    def warmup(self) -> dict:
        reason = self.config.get("fail_warmup")
        if reason:
            raise self.WarmupFailed(str(reason))
        return {}

    @tool("noop", "Do nothing and return at once (measures server overhead).", hidden=True)
    def noop(self, ctx: ToolContext) -> dict:
        return {}

    @tool(
        "sleep",
        "Sleep for the given number of seconds (tests timeouts and concurrency).",
        {"properties": {"seconds": {"type": "number", "minimum": 0}}, "required": ["seconds"]},
        hidden=True,
    )
    def sleep(self, ctx: ToolContext, seconds: float) -> dict:
        if seconds > ctx.timeout:
            time.sleep(ctx.timeout)
            raise ToolTimeout(f"slept the whole timeout of {ctx.timeout:g} s", {"slept": ctx.timeout})
        time.sleep(seconds)
        return {"slept": seconds}

    @tool(
        "echo",
        "Return the given value, or fail with it when 'fail' is true (tests error paths).",
        {"properties": {"value": {}, "fail": {"type": "boolean"}}},
        hidden=True,
    )
    def echo(self, ctx: ToolContext, value=None, fail: bool = False) -> dict:
        if fail:
            raise ToolError("asked to fail", {"value": value})
        if value == "__param_error__":
            raise ParamError("value", "asked to reject this value")
        return {"value": value}
