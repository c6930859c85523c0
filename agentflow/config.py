"""Config files: JSON with ``${VAR}`` / ``${VAR:-default}`` expansion, and the server config.

Rollout and synthesis configs use :func:`load_json` and :func:`expand_env` from here too,
so every config file in AgentFlow reports problems the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ConfigError", "ServerConfig", "as_bool", "as_float", "as_int", "data_path", "did_you_mean",
           "expand_env", "load_json", "load_server_config", "reject_unknown_keys"]

_SHIPPED = ("seeds", "benchmark", "configs")


def data_path() -> Path:
    """The folder holding AgentFlow's shipped data (``seeds/``, ``benchmark/``, ``configs/``):
    ``agentflow/_data`` inside an installed wheel, else the top of the source checkout.
    ``agentflow data path`` prints it."""
    package = Path(__file__).resolve().parent
    for cand in (package / "_data", package.parent):
        if all((cand / name).is_dir() for name in _SHIPPED):
            return cand
    return package / "_data"


REPO_DIR = data_path()
"""Where the shipped seeds, benchmarks and configs are (see :func:`data_path`)."""

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(ValueError):
    """A config file is missing, malformed, or names an unknown key or value."""


def load_json(path: str | os.PathLike) -> dict:
    """Read a JSON object from ``path`` with errors that name the file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {p}: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a JSON object, not {type(data).__name__}")
    return data


def expand_env(value: Any, where: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string inside ``value``.

    Raises:
        ConfigError: a variable without a default is unset; the message names it and
            the key (``where``) that used it.
    """
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"'{where}' uses ${{{name}}}, but the environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def read_config(config_path: str | os.PathLike | dict | None, overrides: dict, known, what: str
                ) -> tuple[dict, str, str | None]:
    """The shared first steps of loading a rollout or synthesis config: read the file
    (or take a dict), drop ``_comment`` keys, apply non-None ``overrides``, refuse
    unknown keys and expand ``${VAR}``.

    Returns:
        (values, where — a "file: " prefix for messages, the file path or None).
    """
    where, source = "", None
    if isinstance(config_path, dict):
        raw = dict(config_path)
    elif config_path is not None:
        where, source = f"{config_path}: ", str(config_path)
        raw = load_json(config_path)
    else:
        raw = {}
    given = {k: v for k, v in overrides.items() if v is not None}
    # Flags always name known keys, so an unknown override came from --set: blame it, not the file.
    reject_unknown_keys([k for k in given if not str(k).startswith("_")], known, what, "override (--set): ")
    raw.update(given)
    values = {k: v for k, v in raw.items() if not str(k).startswith("_")}
    reject_unknown_keys(values, known, what, where)
    try:
        return expand_env(values), where, source
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def did_you_mean(word: str, known) -> str:
    """`` (did you mean 'x'?)`` when a known word is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def reject_unknown_keys(keys, known, what: str, where: str = "") -> None:
    """Raise ConfigError naming every unknown key, with a "did you mean" where one is close."""
    unknown = sorted(set(keys) - set(known))
    if not unknown:
        return
    hints = [f"'{key}'{did_you_mean(key, known)}" for key in unknown]
    raise ConfigError(f"{where}unknown {what} key(s) {', '.join(hints)}; known keys: {', '.join(sorted(known))}")


def as_bool(value: Any, label: str) -> bool:
    """A config flag: JSON true/false, or the strings true/false/1/0/yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{label} must be true or false, got {value!r}")


def as_int(value: Any, label: str, minimum: int) -> int:
    """A config integer (a numeric string is accepted) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{label} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{label} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return number


def as_float(value: Any, label: str, low: float, high: float | None = None) -> float:
    """A config number in ``[low, high]`` (``high`` None: no upper bound)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be a number, got {value!r}") from None
    if number < low or (high is not None and number > high):
        expected = f"a number in [{low:g}, {high:g}]" if high is not None else f"a number >= {low:g}"
        raise ConfigError(f"{label} must be {expected}, got {value!r}")
    return number


# Resource names used by AgentFlow's own config files that we know under another name.
RESOURCE_ALIASES = {"websearch": "web", "search": "web", "python": "code", "sql": "text2sql"}

_SERVER_KEYS = {
    "host", "port", "url", "session_ttl", "auth_token", "database_url", "data_dir",
    "max_request_bytes", "max_output_bytes", "max_call_timeout", "cleanup_interval",
    "roots", "workers", "threads", "log_level", "workspace_dir", "allowed_hosts", "allowed_origins",
    "isolation", "cgroup_parent", "node_id", "node_url", "node_lease", "max_sessions", "cluster_token",
}
_TOP_KEYS = {"server", "resources", "apis", "warmup", "$schema"}


@dataclasses.dataclass
class ServerConfig:
    """Everything the sandbox server needs to start."""

    host: str = "127.0.0.1"
    port: int = 18890
    session_ttl: float = 300.0
    auth_token: str | None = None
    database_url: str | None = None
    data_dir: Path = Path(".agentflow")
    max_request_bytes: int = 16 * 1024 * 1024
    max_output_bytes: int = 64 * 1024
    max_call_timeout: float = 600.0
    cleanup_interval: float = 10.0
    roots: list[Path] = dataclasses.field(default_factory=list)
    workspace_dir: Path | None = None
    """Where session workspaces live (default: ``<data_dir>/workspaces``)."""
    workers: int | None = None
    threads: int | None = None
    log_level: str = "info"
    isolation: str = "bwrap"
    """``bwrap``: every session confined (see agentflow.isolation); ``none``: unconfined."""
    cgroup_parent: str = "agentflow"
    """The cgroup folder (under each controller) that session cgroups go in."""
    node_id: str | None = None
    """This server's name in a cluster (default ``<hostname>:<port>``, see :attr:`node_name`)."""
    node_url: str | None = None
    """Where the other nodes reach this one (default ``http://<host>:<port>``)."""
    node_lease: float = 15.0
    """Seconds a node stays live without renewing its lease (renewed 5 times per lease)."""
    max_sessions: int = 0
    """Live sessions this node takes (0: no limit); more are placed on other nodes."""
    cluster_token: str | None = None
    """Bearer token nodes send each other when forwarding (default: ``auth_token``)."""
    allowed_hosts: list[str] | None = None
    """``Host`` names the server answers to (``*``: any); None: the bound host, loopback
    names and addresses, and this node's own name (see agentflow.server.guard)."""
    allowed_origins: list[str] = dataclasses.field(default_factory=list)
    """Browser origins (``scheme://host[:port]``, ``*``: any) allowed besides the server's own."""
    resources: dict[str, dict] | None = None
    """{name: backend config}; None means every backend that needs no external service."""
    warmup_enabled: bool = False
    warmup_resources: list[str] = dataclasses.field(default_factory=list)
    source: Path | None = None
    project_dir: Path = dataclasses.field(default_factory=lambda: _project_dir())

    @property
    def node_name(self) -> str:
        import socket

        return self.node_id or f"{socket.gethostname()}:{self.port}"

    @property
    def advertised_url(self) -> str:
        """The URL other nodes forward to: ``node_url``, else built from host and port."""
        if self.node_url:
            return self.node_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("localhost" if self.host == "::" else self.host)
        return f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"

    @property
    def forward_token(self) -> str | None:
        return self.cluster_token or self.auth_token

    @property
    def effective_database_url(self) -> str:
        from .db.engine import default_database_url

        return self.database_url or default_database_url(self.data_dir)


def _project_dir() -> Path:
    """Relative paths in configs resolve against the current directory when it is an
    AgentFlow project (has ``seeds/`` or ``configs/``), else against the shipped data
    (:func:`data_path`)."""
    cwd = Path.cwd()
    return cwd if (cwd / "seeds").is_dir() or (cwd / "configs").is_dir() else data_path()


def load_server_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the server config from a file (or none) and the environment.

    ``AGENTFLOW_HOME``, ``AGENTFLOW_DATABASE_URL`` and ``AGENTFLOW_API_TOKEN`` override
    the file's ``data_dir``, ``database_url`` and ``auth_token``.
    """
    env = os.environ if env is None else env
    raw: dict = {}
    cfg = ServerConfig()
    if path:
        raw = expand_env(load_json(path), env=env)
        cfg.source = Path(path).resolve()
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) "
                              f"{', '.join(repr(k) + did_you_mean(k, _TOP_KEYS) for k in unknown)}; "
                              "known: server, resources, apis, warmup")
    _apply_server_section(cfg, raw.get("server") or {}, path)
    cfg.resources = _resources(raw, path) if ("resources" in raw or "apis" in raw) else None
    warm = raw.get("warmup") or {}
    cfg.warmup_enabled = bool(warm.get("enabled", False))
    cfg.warmup_resources = [RESOURCE_ALIASES.get(r, r) for r in warm.get("resources", [])]
    if env.get("AGENTFLOW_HOME"):
        cfg.data_dir = Path(env["AGENTFLOW_HOME"])
    if env.get("AGENTFLOW_DATABASE_URL"):
        cfg.database_url = env["AGENTFLOW_DATABASE_URL"]
    if env.get("AGENTFLOW_ISOLATION"):
        cfg.isolation = env["AGENTFLOW_ISOLATION"]
    if cfg.isolation not in ("bwrap", "none"):
        raise ConfigError(f"server.isolation must be \"bwrap\" or \"none\", got {cfg.isolation!r}")
    if env.get("AGENTFLOW_API_TOKEN"):
        cfg.auth_token = env["AGENTFLOW_API_TOKEN"]
    _apply_cluster_env(cfg, env)
    cfg.data_dir = cfg.data_dir.resolve()
    cfg.auth_token = cfg.auth_token or None
    cfg.cluster_token = cfg.cluster_token or None
    _check_cluster(cfg, path)
    return cfg


def _apply_cluster_env(cfg: ServerConfig, env: Mapping[str, str]) -> None:
    for key in ("node_id", "node_url", "cluster_token"):
        if env.get(f"AGENTFLOW_{key.upper()}"):
            setattr(cfg, key, env[f"AGENTFLOW_{key.upper()}"])
    if env.get("AGENTFLOW_NODE_LEASE"):
        cfg.node_lease = as_float(env["AGENTFLOW_NODE_LEASE"], "AGENTFLOW_NODE_LEASE", 0.5)


def _check_cluster(cfg: ServerConfig, path) -> None:
    """A cluster needs a database every node reaches: sqlite is one machine's file."""
    where = f"{path}: " if path else ""
    if cfg.node_lease < 0.5:
        raise ConfigError(f"{where}server.node_lease must be a number >= 0.5 seconds, got {cfg.node_lease!r}")
    if cfg.node_id is not None and (not isinstance(cfg.node_id, str) or not _NODE_ID.fullmatch(cfg.node_id)):
        raise ConfigError(f"{where}server.node_id must be 1-128 characters of letters, digits and . _ : @ -, "
                          f"got {cfg.node_id!r}")
    if cfg.node_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", str(cfg.node_url)):
        raise ConfigError(f"{where}server.node_url must be an http:// or https:// URL, got {cfg.node_url!r}")
    if cfg.node_url and cfg.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            f"{where}server.node_url (or AGENTFLOW_NODE_URL) is set, but the database is sqlite, a file on "
            "this machine that other nodes cannot share: a cluster needs PostgreSQL (server.database_url or "
            "AGENTFLOW_DATABASE_URL = postgresql+psycopg://...). Remove node_url to run a single node.")


_NODE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@-]{0,127}")


def _apply_server_section(cfg: ServerConfig, server: dict, path) -> None:
    unknown = sorted(set(server) - _SERVER_KEYS)
    if unknown:
        raise ConfigError(f"{path}: server: unknown option(s) "
                          f"{', '.join(repr(k) + did_you_mean(k, _SERVER_KEYS) for k in unknown)}; "
                          f"known: {', '.join(sorted(_SERVER_KEYS))}")
    types = {"port": int, "session_ttl": float, "max_request_bytes": int, "max_output_bytes": int,
             "max_call_timeout": float, "cleanup_interval": float, "workers": int, "threads": int,
             "node_lease": float}
    if "max_sessions" in server:  # 0 means no limit, so it is not one of the positive numbers
        cfg.max_sessions = as_int(server["max_sessions"], f"{path}: server.max_sessions", 0)
        server = {k: v for k, v in server.items() if k != "max_sessions"}
    for key, value in server.items():
        if key == "url":
            continue
        if key in types:
            try:
                value = types[key](value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: server.{key} must be a number, got {value!r}") from None
            if value <= 0:
                raise ConfigError(f"{path}: server.{key} must be positive, got {value!r}")
        elif key in ("data_dir", "workspace_dir"):
            value = Path(value)
        elif key == "roots":
            if not isinstance(value, list):
                raise ConfigError(f"{path}: server.roots must be a list of directories")
            value = [Path(v) for v in value]
        elif key in ("allowed_hosts", "allowed_origins"):
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ConfigError(f"{path}: server.{key} must be a list of non-empty strings, got {value!r}")
            value = [v.strip().lower().rstrip("/") for v in value]
        setattr(cfg, key, value)


def _resources(raw: dict, path) -> dict[str, dict]:
    """Merge ``resources`` (``{name: {enabled, config}}``) and ``apis`` (``{name: {...}}``)."""
    out: dict[str, dict] = {}
    for name, section in (raw.get("resources") or {}).items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: resources.{name} must be an object")
        if not section.get("enabled", True):
            continue
        reject_unknown_keys(section, {"enabled", "config", "description", "backend_class"},
                            f"resources.{name}", f"{path}: ")
        out[RESOURCE_ALIASES.get(name, name)] = dict(section.get("config") or {})
    for name, section in (raw.get("apis") or {}).items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: apis.{name} must be an object")
        out.setdefault(RESOURCE_ALIASES.get(name, name), {}).update(section)
    return out
