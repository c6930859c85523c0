"""``agentflow mcp serve``: the sandbox's tools as an MCP server over stdio."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("mcp", help="the sandbox as an MCP server (for Claude Desktop, Cursor, agents)")
    mcpsub = parser.add_subparsers(dest="mcp_command", metavar="ACTION")
    mcpsub.required = True
    serve = mcpsub.add_parser(
        "serve", help="serve the sandbox's tools over stdio (one connection = one worker)",
        description="Speak MCP on stdin/stdout. Every call goes to a sandbox server as one worker, so state "
                    "(bash cd/export, Python variables, a desktop) persists across the calls of the connection; "
                    "its sessions are destroyed when the client disconnects. Logs go to stderr.")
    serve.add_argument("--server-url", default=os.environ.get("AGENTFLOW_SERVER_URL", "http://127.0.0.1:18890"),
                       help="sandbox server (default: AGENTFLOW_SERVER_URL or http://127.0.0.1:18890)")
    serve.add_argument("--token", default=os.environ.get("AGENTFLOW_API_TOKEN"),
                       help="bearer token of the sandbox server (default: AGENTFLOW_API_TOKEN)")
    serve.add_argument("--auto-start", action="store_true",
                       help="start a local sandbox server for --server-url when none answers (stopped on exit)")
    serve.add_argument("--config", default=os.environ.get("AGENTFLOW_CONFIG"),
                       help="server config for --auto-start (default: AGENTFLOW_CONFIG)")
    serve.add_argument("--tools", nargs="*", default=[], metavar="PATTERN",
                       help="offer only these tools (names or wildcards: 'bash:*' code:run); default: all")
    serve.add_argument("--worker-id", help="the worker id of this connection (default: mcp-<random>)")
    serve.add_argument("--timeout", type=float, default=3660.0,
                       help="seconds one call may take over HTTP (default 3660)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uuid

    try:
        from ..mcp import serve_stdio
    except ImportError as err:
        raise CommandError(f"the mcp extra is not installed ({err}); pip install 'agentflow[mcp]'") from None
    from ..sandbox import Sandbox
    from ..sandbox.errors import SandboxError

    # stdout is the protocol: everything else goes to stderr
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
    sandbox = Sandbox(args.server_url, worker_id=args.worker_id or f"mcp-{uuid.uuid4().hex[:12]}",
                      auto_start_server=args.auto_start, config_path=args.config, timeout=args.timeout,
                      api_token=args.token)
    try:
        sandbox.start_sync()
    except SandboxError as err:
        raise CommandError(f"the sandbox server at {args.server_url} cannot be used: {err}"
                           + ("" if args.auto_start else " (start one with `agentflow serve`, or pass --auto-start)")
                           ) from None
    try:
        serve_stdio(sandbox, args.tools)
    finally:
        sandbox.close_sync()
    return 0
