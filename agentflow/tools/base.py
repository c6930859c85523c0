"""The contract between the server and the tool backends.

A backend is one class per resource type (``bash``, ``code``, ``rag`` …). It declares
its tools as methods decorated with :func:`tool`; the decorator records the tool's name,
an LLM-facing description and the JSON Schema of its parameters. Backends know nothing
of Flask or HTTP: they receive a :class:`ToolContext` and plain keyword arguments, and
return a JSON-serialisable ``dict`` or raise one of the errors below.

Backends are instantiated once per server process (each gunicorn worker has its own),
so anything shared between calls of one *session* must live on disk (the session
workspace) or in a separate OS process recorded in the session state.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..isolation import Confinement, Limits

__all__ = [
    "Backend",
    "BackendContext",
    "BackendConfigError",
    "BackendNotReady",
    "ParamError",
    "SessionFailed",
    "SessionInfo",
    "StateRecord",
    "ToolContext",
    "ToolError",
    "ToolSpec",
    "ToolTimeout",
    "tool",
    "resolve_path",
]


class ToolError(Exception):
    """The tool ran and failed (code 2001). ``data`` goes back to the caller."""

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.data = data or {}


class ToolTimeout(ToolError):
    """The tool hit its time limit (code 2002). ``data`` keeps the partial output."""


class ParamError(Exception):
    """A parameter is wrong in a way JSON Schema cannot see (code 1002)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"parameter '{param}': {message}")
        self.param = param


class SessionFailed(Exception):
    """A session could not be started or has died beyond repair (code 1003)."""


class BackendNotReady(Exception):
    """Warmup failed or has not finished (code 2003)."""


class BackendConfigError(Exception):
    """The backend's configuration is invalid; raised at server start."""


class StateRecord:
    """Mixin for a dataclass kept in ``SessionInfo.state`` (e.g. a kernel's or a
    display's pids and addresses): to JSON and back, ignoring unknown keys."""

    def to_state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict | None):
        """The record stored in ``state``, or None when there is none or it is unreadable."""
        if not state:
            return None
        try:
            return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls) if f.name in state})
        except TypeError:
            return None


@dataclasses.dataclass
class SessionInfo:
    """What a backend sees of a session. ``state`` is persisted in the database as JSON
    after ``create_session`` and after every tool call, so any worker can pick it up."""

    session_id: str
    worker_id: str
    resource_type: str
    workspace: Path
    config: dict
    state: dict
    temporary: bool = False
    save_state: Callable[[], None] | None = dataclasses.field(default=None, repr=False, compare=False)
    """Set while a session is starting: persists ``state`` at once. A backend calls it
    in ``create_session`` as soon as ``state`` names processes it started, so that if
    the server process dies before ``create_session`` returns, ``destroy_session`` is
    still called with them (by the next re-create or by the cleaner)."""
    pooled: str | None = dataclasses.field(default=None, repr=False, compare=False)
    """Set on a session being started for a warm pool (its pool entry id) until it is
    handed out (see :mod:`agentflow.isolation.pool`)."""


@dataclasses.dataclass
class ToolContext:
    """Per-call information handed to a tool method."""

    worker_id: str
    timeout: float
    """Seconds this call may take; the tool must stop by then (raise ToolTimeout)."""
    max_output_bytes: int
    """Cap for any text the tool returns; report the full size beside a truncated text."""
    session: SessionInfo | None = None
    trace_id: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def remaining(self) -> float:
        return max(0.0, self.timeout - (time.monotonic() - self.started))


@dataclasses.dataclass
class BackendContext:
    """Process-wide services a backend may use."""

    data_dir: Path
    """Server data directory (``AGENTFLOW_HOME``); backends keep caches under it."""
    roots: list[Path]
    """Directories that client-given file paths must stay inside."""
    session_factory: Callable[[], Any] | None = None
    """SQLAlchemy ``sessionmaker`` of the server database (for caches such as web)."""
    project_dir: Path = Path.cwd()
    """Relative paths in configs resolve against this directory."""
    isolation: str = "bwrap"
    """``server.isolation``: ``bwrap`` confines sessions, ``none`` (explicit) does not."""
    hidden_paths: list[Path] = dataclasses.field(default_factory=list)
    """Host paths a session must never see (data dir, workspace root, config file)."""
    cgroup_parent: str = "agentflow"
    """Name of the cgroup folder under which session cgroups are made."""
    workspace_root: Path | None = None
    """The server's folder of session workspaces (where a warm pool starts its
    sessions); None: no pool (a backend made outside a server)."""


@dataclasses.dataclass
class ToolSpec:
    """A registered tool: ``resource:name`` plus what an LLM needs to call it."""

    resource_type: str
    name: str
    description: str
    parameters: dict
    method_name: str
    default_timeout: float = 30.0
    max_timeout: float = 600.0
    hidden: bool = False
    needs_session: bool = True
    annotations: dict | None = None
    """Hints about the tool (an MCP server's ``ToolAnnotations``: ``readOnlyHint``…), shown by ``/tools``."""

    @property
    def full_name(self) -> str:
        return f"{self.resource_type}:{self.name}"


def tool(
    name: str,
    description: str,
    parameters: dict | None = None,
    *,
    default_timeout: float = 30.0,
    max_timeout: float = 600.0,
    hidden: bool = False,
    needs_session: bool | None = None,
) -> Callable:
    """Declare a backend method as a tool.

    Args:
        name: tool name without the resource prefix (``run`` for ``bash:run``).
        description: what the tool does, written for an LLM.
        parameters: JSON Schema (``type: object``) of the keyword arguments.
        default_timeout: seconds allowed when the caller gives no ``timeout``.
        max_timeout: the largest ``timeout`` a caller may ask for.
        hidden: leave out of ``GET /tools`` unless ``include_hidden`` is set.
        needs_session: override the backend's ``uses_sessions`` for this tool.
    """
    schema = parameters or {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema.setdefault("additionalProperties", False)

    def mark(func: Callable) -> Callable:
        func.__agentflow_tool__ = dict(
            name=name,
            description=description,
            parameters=schema,
            default_timeout=default_timeout,
            max_timeout=max_timeout,
            hidden=hidden,
            needs_session=needs_session,
        )
        return func

    return mark


class Backend:
    """Base class of a resource backend.

    Subclasses set ``name`` (the resource type) and ``description``, decorate tool
    methods with :func:`tool` (signature ``(self, ctx: ToolContext, **params)``) and
    override the hooks they need. ``config`` is the backend's section of the server
    config (``resources.<name>.config`` merged with ``apis.<name>``).
    """

    name: str = ""
    description: str = ""
    uses_sessions: bool = True
    """False for stateless backends (rag, web…): their tools run without a session."""
    unconfinable: str | None = None
    """Why this backend's sessions cannot be confined here (it then refuses to run)."""
    config_keys: frozenset[str] | None = None
    """Option names this backend understands; None accepts anything. Keys starting
    with ``_`` (comments) are always allowed."""
    default_pool_size: int = 0
    """Warm sessions the node keeps for this backend when ``pool_size`` is not set."""
    pool = None
    """The backend's warm pool (:class:`agentflow.isolation.pool.SessionPool`) or None."""

    def __init__(self, config: dict, context: BackendContext):
        self.config = config
        self.context = context
        self._warm_lock = threading.Lock()
        self._warmed = False
        self.check_config()

    # -- hooks -------------------------------------------------------------------
    def confinement(self, defaults: "Limits | None" = None, extra_read_only: list[Path] = ()) -> "Confinement | None":
        """The confinement of this backend's sessions, from the server's isolation mode
        and this resource's limit options (``memory_mb``, ``network``…).

        Fails closed: when the machine cannot confine (no bubblewrap, no user namespaces,
        no cgroups) this returns None and the backend refuses every call and session with
        a 2003 that says what to install (see :meth:`ensure_warm`); the server's other
        backends keep working.

        Raises:
            BackendConfigError: a limit option is invalid.
        """
        from ..isolation import Confinement, IsolationError, IsolationUnavailable, Limits, isolation_mode

        try:
            limits = Limits.from_config(self.config, self.name, defaults)
            return Confinement(self.name, limits, isolation_mode(self.context.isolation),
                               hidden=self.context.hidden_paths,
                               read_only=[*self.context.roots, *extra_read_only],
                               cgroup_parent=self.context.cgroup_parent)
        except IsolationUnavailable as err:
            self.unconfinable = str(err)
            return None
        except IsolationError as err:
            raise BackendConfigError(str(err)) from None

    def session_pool(self, starter: Callable[[SessionInfo], None]):
        """The node's warm pool of this backend's sessions (``pool_size`` entries, default
        :attr:`default_pool_size`; 0 turns it off), started by ``starter``; None when
        off, when the sessions cannot be confined here, or outside a server.

        Raises:
            BackendConfigError: ``pool_size`` is not an integer >= 0.
        """
        from ..config import ConfigError, as_int

        raw = self.config.get("pool_size", self.default_pool_size)
        try:
            size = as_int(raw, f"resource '{self.name}': pool_size", 0)
        except ConfigError as err:
            raise BackendConfigError(f"{err} (the number of warm sessions the node keeps; 0 turns the pool off)"
                                     ) from None
        confinement = getattr(self, "confine", None)
        if size == 0 or confinement is None or self.context.workspace_root is None:
            return None
        from ..isolation.pool import SessionPool

        return SessionPool(confinement, self.name, size, self.context.workspace_root, starter)

    def start_background(self) -> None:
        """Start this process's background work for the backend (the pool's refill)."""
        if self.pool is not None and not self.unconfinable:
            self.pool.start()

    def check_config(self) -> None:
        """Raise BackendConfigError for unknown or invalid options (at server start)."""
        from ..config import did_you_mean

        if self.config_keys is None:
            return
        unknown = sorted(k for k in self.config if k not in self.config_keys and not k.startswith("_"))
        if unknown:
            raise BackendConfigError(
                f"resource '{self.name}': unknown option(s) "
                f"{', '.join(k + did_you_mean(k, self.config_keys) for k in unknown)}; "
                f"known options: {', '.join(sorted(self.config_keys))}"
            )

    def warmup(self) -> dict:
        """Load indexes/models. Must be idempotent and safe to call in every process.
        Raise any exception to report the backend as not ready."""
        return {}

    def create_session(self, session: SessionInfo) -> None:
        """Prepare per-session resources; store what must survive in ``session.state``.
        Raise SessionFailed when the session cannot start."""

    def destroy_session(self, session: SessionInfo) -> None:
        """End the session's processes. The workspace is removed by the server."""

    def close(self) -> None:
        """Release process-wide resources at server shutdown."""

    # -- used by the server ------------------------------------------------------
    def ensure_warm(self) -> dict:
        if self.unconfinable:
            raise BackendNotReady(self.unconfinable)
        with self._warm_lock:
            if self._warmed:
                return {}
            info = self.warmup() or {}
            self._warmed = True
            return info

    @property
    def warmed(self) -> bool:
        return self._warmed

    @classmethod
    def tool_specs(cls) -> list[ToolSpec]:
        specs = []
        for attr in dir(cls):
            meta = getattr(getattr(cls, attr, None), "__agentflow_tool__", None)
            if meta is None:
                continue
            needs_session = meta["needs_session"]
            specs.append(
                ToolSpec(
                    resource_type=cls.name,
                    method_name=attr,
                    needs_session=cls.uses_sessions if needs_session is None else needs_session,
                    **{k: v for k, v in meta.items() if k != "needs_session"},
                )
            )
        return specs


def resolve_path(value: str, roots: list[Path], param: str, base: Path | None = None) -> Path:
    """Resolve a client-given path and make sure it stays inside one of ``roots``.

    Relative paths are tried against ``base`` (default: each root in turn).

    Raises:
        ParamError: the path escapes every root or does not exist.
    """
    if not value or not isinstance(value, str):
        raise ParamError(param, "must be a non-empty path")
    raw = Path(value)
    candidates = [raw] if raw.is_absolute() else [(b / raw) for b in ([base] if base else []) + list(roots)]
    inside = []
    for cand in candidates:
        real = cand.resolve()
        if any(real == r.resolve() or r.resolve() in real.parents for r in roots):
            inside.append(real)
    if not inside:
        raise ParamError(param, f"'{value}' is outside the allowed directories")
    for real in inside:
        if real.exists():
            return real
    raise ParamError(param, f"'{value}' does not exist")
