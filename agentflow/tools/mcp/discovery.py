"""Learning each configured MCP server's tools, once per server start.

The tool list must be known when a server process builds its registry, so every
gunicorn worker needs it; starting every server in every worker would multiply the
cost (and the side effects of a server's start). The first process to need a server's
tools starts it once — a stdio server in a throwaway jail like a session's, a url
server over HTTP — lists its tools, stops it and writes the list to
``<data_dir>/mcp/discovery/<fingerprint>-<boot>.json``; the others wait on a lock and
read that file. ``<boot>`` is the gunicorn master's pid, so one server start discovers
once, and a restart (perhaps with upgraded servers) discovers again.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from ..base import BackendConfigError, SessionInfo
from . import remote
from .config import ServerSpec

log = logging.getLogger(__name__)

__all__ = ["discover", "discovery_dir"]

_KEEP_SECONDS = 86400


def discovery_dir(data_dir: Path) -> Path:
    path = Path(data_dir) / "mcp" / "discovery"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _boot() -> str:
    return os.environ.get("AGENTFLOW_MASTER_PID") or str(os.getpid())


def discover(backend) -> dict[str, list[dict]]:
    """``{server: [tool (wire form)…]}`` for every configured server this node can run.

    Raises:
        BackendConfigError: a server did not start, did not answer as an MCP server, or
            listed no tools; the message names it and quotes its error.
    """
    found: dict[str, list[dict]] = {}
    for spec in backend.servers.values():
        if spec.transport == "stdio" and backend.confine is None:
            continue  # the backend cannot confine here: it refuses every call (2003) and says why
        found[spec.name] = _tools(backend, spec)
    return found


def _tools(backend, spec: ServerSpec) -> list[dict]:
    folder = discovery_dir(backend.context.data_dir)
    fingerprint = spec.fingerprint()
    path = folder / f"{fingerprint}-{_boot()}.json"
    with open(folder / f".{fingerprint}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return json.loads(path.read_text())["tools"]
        except (OSError, ValueError, KeyError):
            pass
        started = time.monotonic()
        reply = _ask(backend, spec, folder)
        if reply.get("status") != "ok":
            where = "url" if spec.url else "command"
            raise BackendConfigError(
                f"resource '{backend.name}': MCP server '{spec.name}' ({spec.transport}, {where} "
                f"{spec.describe().get(where)!r}) could not be used: {reply.get('error')}")
        tools = [t for t in reply.get("tools") or [] if isinstance(t, dict)]
        log.info("mcp server %s: %d tool(s) in %.1f s (protocol %s)", spec.name, len(tools),
                 time.monotonic() - started, reply.get("protocol_version"))
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"tools": tools, "server_info": reply.get("server_info"),
                                   "protocol_version": reply.get("protocol_version"), "at": time.time()}))
        os.replace(tmp, path)
        _prune(folder)
        return tools


def _ask(backend, spec: ServerSpec, folder: Path) -> dict:
    timeout = min(backend.mcp.discovery_timeout, spec.startup_timeout + 30)
    if spec.transport == "http":
        return remote.list_tools(spec, timeout)
    from ...isolation import IsolationError, SupervisorError

    workspace = folder / f"ws-{uuid.uuid4().hex[:12]}"
    workspace.mkdir(mode=0o700)
    info = SessionInfo(f"mcp-discovery-{workspace.name[3:]}", "", backend.name, workspace, {}, {}, temporary=True)
    try:
        supervisor = backend.confine.start(info, backend.jail_env(workspace), startup_timeout=spec.startup_timeout)
        return backend.host_request(supervisor, spec, info, "list", timeout=timeout)
    except (IsolationError, SupervisorError, OSError) as err:
        return {"status": "start_failed", "error": f"its sandbox failed: {err}"}
    finally:
        backend.confine.stop(info)
        shutil.rmtree(workspace, ignore_errors=True)


def _prune(folder: Path) -> None:
    cutoff = time.time() - _KEEP_SECONDS
    for old in folder.glob("*.json"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass
