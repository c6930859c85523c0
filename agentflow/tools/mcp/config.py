"""The ``mcp`` resource's config: which MCP servers, how to start or reach them.

Checked once at server start; every problem is a :class:`BackendConfigError` that names
the server and the option. Two spellings load:

- ours (and Claude Desktop's): ``servers`` (or ``mcpServers``) = ``{name: {command, args,
  env, cwd} | {url, headers}}`` plus per-server options;
- the reference AgentFlow's Toolathlon-GYM section (``enabled_mcp_servers``,
  ``workspace_root``, ``env_overrides``): ``env_overrides`` is added to every stdio
  server's environment and ``enabled_mcp_servers`` picks servers defined under
  ``servers``; a name it lists that is not defined there is one of Toolathlon's own
  servers, which only run in the Toolathlon image, and is refused by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from ..base import BackendConfigError

__all__ = ["McpConfig", "ServerSpec", "parse_config", "SERVER_NAME"]

SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STDIO_KEYS = {"command", "args", "env", "cwd"}
_HTTP_KEYS = {"url", "headers"}
_COMMON_KEYS = {"type", "transport", "shared", "timeout", "max_timeout", "startup_timeout", "cancel_grace",
                "read_only_paths", "start", "description", "disabled", "enabled"}
SERVER_KEYS = frozenset(_STDIO_KEYS | _HTTP_KEYS | _COMMON_KEYS)
RESOURCE_KEYS = frozenset({"servers", "mcpServers", "enabled_mcp_servers", "workspace_root", "env_overrides",
                           "discovery_timeout", "memory_mb", "max_processes", "disk_mb", "file_size_mb",
                           "cpu_seconds", "network"})
_SECRET_NAME = re.compile(r"key|token|secret|password|passwd|auth|credential|cookie|session", re.I)
TOOLATHLON_NOTE = ("Toolathlon-GYM servers, which run only inside the Toolathlon image (its own Postgres, "
                   "filesystem and terminal services)")


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """One configured MCP server."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    shared: bool = False
    """Run once per node for every session (stdio), instead of once per session."""
    timeout: float = 60.0
    max_timeout: float = 600.0
    startup_timeout: float = 30.0
    cancel_grace: float = 2.0
    read_only_paths: tuple[str, ...] = ()
    start: str = "first_use"
    """``first_use`` or ``session`` (started when the session is created)."""
    description: str = ""

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def launch(self) -> dict:
        """What the session supervisor needs to start it (JSON-safe; never logged)."""
        return {"command": self.command, "args": list(self.args), "env": dict(self.env), "cwd": self.cwd}

    def fingerprint(self) -> str:
        """A hash of everything that changes what the server is (secrets included, only hashed)."""
        raw = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def secrets(self) -> list[str]:
        """Values that must never appear in an answer: env values with secret-like names
        and every header value."""
        values = [v for k, v in self.env if _SECRET_NAME.search(k)] + [v for _, v in self.headers]
        values += [v.split(" ", 1)[1] for _, v in self.headers if " " in v]  # "Bearer <token>"
        return [v for v in values if len(v) >= 4]

    def describe(self) -> dict:
        """What the server may say about this server (no env, no headers)."""
        where = {"url": _redact_url(self.url)} if self.url else {"command": os.path.basename(self.command or "")}
        return {"transport": self.transport, "shared": self.shared, **where,
                "env_keys": sorted(k for k, _ in self.env), "header_keys": sorted(k for k, _ in self.headers)}


@dataclasses.dataclass(frozen=True)
class McpConfig:
    servers: dict[str, ServerSpec]
    discovery_timeout: float = 60.0
    workspace_root: str | None = None
    """Accepted from the reference config; each session's own workspace takes its place."""


def _redact_url(url: str | None) -> str | None:
    return re.sub(r"//[^/@]*@", "//***@", url) if url else url


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BackendConfigError(f"{where} must be a positive number of seconds, got {value!r}")
    return float(value)


def _str_map(value, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BackendConfigError(f"{where} must be an object of NAME: \"value\"")
    out = []
    for key, item in value.items():
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise BackendConfigError(f"{where}.{key} must be a string")
        out.append((str(key), str(item)))
    return tuple(sorted(out))


def _server(name: str, raw, env_overrides: tuple, where: str) -> ServerSpec:
    from ...config import did_you_mean

    if not SERVER_NAME.fullmatch(str(name)):
        raise BackendConfigError(f"{where}: server name {name!r} must be 1-64 letters, digits, '_' or '-' "
                                 "(it becomes part of tool names: mcp:<server>.<tool>)")
    here = f"{where}.{name}"
    if not isinstance(raw, dict):
        raise BackendConfigError(f"{here} must be an object with 'command' (stdio) or 'url' (Streamable HTTP)")
    unknown = sorted(k for k in raw if k not in SERVER_KEYS and not str(k).startswith("_"))
    if unknown:
        raise BackendConfigError(f"{here}: unknown option(s) {', '.join(k + did_you_mean(k, SERVER_KEYS) for k in unknown)}; "
                                 f"known: {', '.join(sorted(SERVER_KEYS))}")
    kind = raw.get("type") or raw.get("transport")
    if kind is not None and kind not in ("stdio", "http", "streamable-http", "streamable_http"):
        raise BackendConfigError(f"{here}.type must be \"stdio\" or \"http\" (Streamable HTTP), got {kind!r}"
                                 + ("; the SSE transport is not supported" if kind == "sse" else ""))
    has_command, has_url = raw.get("command") is not None, raw.get("url") is not None
    if has_command == has_url:
        raise BackendConfigError(f"{here} needs exactly one of 'command' (a stdio server) and 'url' (a Streamable "
                                 "HTTP server)" + (", not both" if has_command else ""))
    opts: dict = {"name": str(name)}
    for key in ("timeout", "max_timeout", "startup_timeout", "cancel_grace"):
        if key in raw:
            opts[key] = _number(raw[key], f"{here}.{key}")
    if opts.get("timeout", 60.0) > opts.get("max_timeout", 600.0):
        raise BackendConfigError(f"{here}.timeout ({opts['timeout']:g}) is above max_timeout ({opts.get('max_timeout', 600):g})")
    if "start" in raw and raw["start"] not in ("first_use", "session"):
        raise BackendConfigError(f"{here}.start must be \"first_use\" or \"session\", got {raw['start']!r}")
    opts["start"] = raw.get("start", "first_use")
    if not isinstance(raw.get("shared", False), bool):
        raise BackendConfigError(f"{here}.shared must be true or false")
    opts["shared"] = raw.get("shared", False)
    opts["description"] = str(raw.get("description") or "")
    paths = raw.get("read_only_paths") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in paths):
        raise BackendConfigError(f"{here}.read_only_paths must be a list of absolute folder paths")
    opts["read_only_paths"] = tuple(paths)
    if has_url:
        stray = sorted(k for k in _STDIO_KEYS if k in raw)
        if stray:
            raise BackendConfigError(f"{here}: {', '.join(stray)} apply to stdio servers, not to a 'url' server")
        url = raw["url"]
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise BackendConfigError(f"{here}.url must be an http:// or https:// URL, got {_redact_url(str(url))!r}")
        if opts["shared"] or opts["start"] != "first_use":
            raise BackendConfigError(f"{here}: 'shared' and 'start' apply to stdio servers (a 'url' server is "
                                     "reached over HTTP, one connection per call)")
        return ServerSpec(url=url, headers=_str_map(raw.get("headers"), f"{here}.headers"), **opts)
    if "headers" in raw:
        raise BackendConfigError(f"{here}: 'headers' apply to 'url' servers, not to a stdio server")
    command = raw["command"]
    if not isinstance(command, str) or not command.strip():
        raise BackendConfigError(f"{here}.command must be a non-empty string (the program to run)")
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
        raise BackendConfigError(f"{here}.args must be a list of strings")
    found = shutil.which(command) if os.sep not in command else (command if os.access(command, os.X_OK) else None)
    if found is None:
        raise BackendConfigError(f"{here}.command: program {command!r} was not found"
                                 + (" on PATH" if os.sep not in command else " or is not executable")
                                 + "; install it or give its absolute path")
    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise BackendConfigError(f"{here}.cwd must be a folder path (relative to the session workspace, or absolute)")
    env = dict(env_overrides)
    env.update(dict(_str_map(raw.get("env"), f"{here}.env")))
    return ServerSpec(command=os.path.realpath(found), args=tuple(str(a) for a in args),
                      env=tuple(sorted(env.items())), cwd=cwd, **opts)


def parse_config(cfg: dict, resource: str = "mcp") -> McpConfig:
    """The checked config of the ``mcp`` resource.

    Raises:
        BackendConfigError: an option is unknown or invalid, no server is configured, or
            ``enabled_mcp_servers`` names servers that are not defined here.
    """
    where = f"resource '{resource}'"
    if "servers" in cfg and "mcpServers" in cfg:
        raise BackendConfigError(f"{where}: give the servers once, under 'servers' or 'mcpServers', not both")
    servers = cfg.get("servers", cfg.get("mcpServers")) or {}
    key = "mcpServers" if "mcpServers" in cfg else "servers"
    if not isinstance(servers, dict):
        raise BackendConfigError(f"{where}: {key} must be an object of name: {{command, args, env}} or {{url}}")
    env_overrides = _str_map(cfg.get("env_overrides"), f"{where}: env_overrides")
    wanted = cfg.get("enabled_mcp_servers")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
            raise BackendConfigError(f"{where}: enabled_mcp_servers must be a list of server names")
        missing = [n for n in wanted if n not in servers]
        if missing:
            raise BackendConfigError(
                f"{where}: enabled_mcp_servers names {', '.join(repr(n) for n in missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not defined under '{key}'. The reference AgentFlow's "
                f"MCP backend starts these as {TOOLATHLON_NOTE}; this AgentFlow starts any MCP server you define: "
                f"add each one under 'servers' as {{\"command\": ..., \"args\": [...]}} or {{\"url\": ...}}, or "
                "remove it from enabled_mcp_servers")
    specs: dict[str, ServerSpec] = {}
    for name, raw in servers.items():
        if wanted is not None and name not in wanted:
            continue
        if isinstance(raw, dict) and (raw.get("disabled") is True or raw.get("enabled") is False):
            continue
        specs[name] = _server(name, raw, env_overrides, f"{where}: {key}")
    if not specs:
        raise BackendConfigError(f"{where}: no MCP server is configured; add {key}: "
                                 '{"name": {"command": "...", "args": [...]}} (stdio) or '
                                 '{"name": {"url": "https://..."}} (Streamable HTTP)')
    discovery = _number(cfg["discovery_timeout"], f"{where}: discovery_timeout") if "discovery_timeout" in cfg else 60.0
    root = cfg.get("workspace_root")
    return McpConfig(servers=specs, discovery_timeout=discovery, workspace_root=str(root) if root else None)


def install_dirs(spec: ServerSpec) -> list[Path]:
    """Folders a stdio server's program needs to see in the jail: its installation
    (``<prefix>/bin/prog`` → ``<prefix>``; a Node package's script → its package tree)
    and the configured ``read_only_paths``."""
    out: list[Path] = [Path(p) for p in spec.read_only_paths]
    if spec.command:
        real = Path(os.path.realpath(spec.command))
        prefix = real.parent.parent if real.parent.name == "bin" else real.parent
        out.append(prefix)
        for arg in spec.args:  # e.g. node /opt/mcp/node_modules/pkg/dist/index.js
            if os.path.isabs(arg) and os.path.exists(arg):
                path = Path(os.path.realpath(arg))
                parts = path.parts
                if "node_modules" in parts:
                    path = Path(*parts[:parts.index("node_modules") + 1])
                elif path.is_file():
                    path = path.parent
                out.append(path)
    system = (Path("/usr"), Path("/etc"), Path("/opt"), Path("/bin"), Path("/lib"))
    return [p for p in dict.fromkeys(out) if p.is_dir() and p not in system and p != Path("/")]
