"""The enabled backends of this process and their tools, looked up by name or alias."""
from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
import time

from ..config import RESOURCE_ALIASES, ServerConfig
from ..tools import BACKENDS, DEFAULT_RESOURCES, UnknownResource, backend_class
from ..tools.base import Backend, BackendConfigError, BackendContext, ToolSpec
from .errors import BackendUnavailable, ParameterError, ToolNotFound

log = logging.getLogger(__name__)

_SEPARATORS = (":", "-", "_", ".", "/")
_WARMUP_RETRY_SECONDS = 30.0


_OPENAI_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_OPENAI_MAX = 64


def openai_name(spec: ToolSpec) -> str:
    """The name offered to OpenAI tool calling (letters, digits, ``_`` and ``-`` only, at
    most 64): ``bash-run``; ``mcp:time.get_current_time`` → ``mcp-time_get_current_time``
    (other characters become ``_``; a longer name is cut and ends in a hash of the full one)."""
    name = _OPENAI_UNSAFE.sub("_", f"{spec.resource_type}-{spec.name}")
    if len(name) > _OPENAI_MAX:
        name = name[:_OPENAI_MAX - 9] + "_" + hashlib.sha256(spec.full_name.encode()).hexdigest()[:8]
    return name


class ToolRegistry:
    """Instantiates the configured backends and resolves tool names.

    Raises:
        BackendConfigError: a configured resource is unknown or its options are invalid.
    """

    def __init__(self, config: ServerConfig, context: BackendContext):
        wanted = config.resources if config.resources is not None else {n: {} for n in DEFAULT_RESOURCES}
        self.backends: dict[str, Backend] = {}
        for name, options in wanted.items():
            try:
                cls = backend_class(name)
            except UnknownResource:
                raise BackendConfigError(
                    f"resource '{name}' is not available in this AgentFlow; known resources: "
                    f"{', '.join(sorted(BACKENDS))}"
                ) from None
            self.backends[name] = cls(dict(options), context)
        self.specs: dict[str, ToolSpec] = {}
        self._aliases: dict[str, ToolSpec] = {}
        for backend in self.backends.values():
            for spec in backend.tool_specs():
                self.specs[spec.full_name] = spec
                for sep in _SEPARATORS:
                    self._aliases[f"{spec.resource_type}{sep}{spec.name}".lower()] = spec
        for spec in self.specs.values():  # names with other characters (mcp:srv.tool) as /tools?format=openai gives them
            self._aliases.setdefault(openai_name(spec).lower(), spec)
        # the resource names AgentFlow's reference configs use for ours (sql:execute → text2sql:execute)
        for spec in self.specs.values():
            for other, ours in RESOURCE_ALIASES.items():
                if ours == spec.resource_type and other not in self.backends:
                    for sep in _SEPARATORS:
                        self._aliases.setdefault(f"{other}{sep}{spec.name}".lower(), spec)
        self._warm_failures: dict[str, tuple[float, str]] = {}
        self._warm_lock = threading.Lock()

    # -- lookup ------------------------------------------------------------------
    def resolve(self, action: str) -> ToolSpec:
        spec = self._aliases.get(action.strip().lower()) if isinstance(action, str) else None
        if spec is None:
            close = difflib.get_close_matches(str(action).lower(), list(self._aliases), n=5, cutoff=0.5)
            names = sorted({self._aliases[c].full_name for c in close})
            hint = f"; did you mean {', '.join(names)}?" if names else "; GET /tools lists the tools"
            raise ToolNotFound(f"tool '{action}' not found{hint}", {"suggestions": names})
        return spec

    @staticmethod
    def canonical_resource(resource_type: str) -> str:
        """Our name for a resource type of AgentFlow's reference configs (``sql`` →
        ``text2sql``); other names unchanged."""
        return RESOURCE_ALIASES.get(resource_type, resource_type) if isinstance(resource_type, str) else resource_type

    def backend(self, resource_type: str) -> Backend:
        try:
            return self.backends[resource_type]
        except KeyError:
            raise ParameterError(
                f"parameter 'resource_type': unknown resource type '{resource_type}'; "
                f"enabled: {', '.join(sorted(self.backends))}"
            ) from None

    def list_specs(self, include_hidden: bool = False) -> list[ToolSpec]:
        return [s for _, s in sorted(self.specs.items()) if include_hidden or not s.hidden]

    # -- warmup ------------------------------------------------------------------
    def ensure_ready(self, name: str, force: bool = False) -> dict:
        """Warm the backend in this process (once); raise BackendUnavailable on failure.

        A failed warmup is retried at most every 30 s unless ``force`` is set.
        """
        backend = self.backend(name)
        if backend.warmed:
            return {}
        failed = self._warm_failures.get(name)
        if failed and not force and time.monotonic() - failed[0] < _WARMUP_RETRY_SECONDS:
            raise BackendUnavailable(f"backend '{name}' is not ready: {failed[1]}", {"error": failed[1]})
        try:
            info = backend.ensure_warm()
        except Exception as err:  # noqa: BLE001 - any warmup failure is reported as 2003
            reason = f"{type(err).__name__}: {err}"
            log.exception("warmup of backend %s failed", name)
            self._warm_failures[name] = (time.monotonic(), reason)
            raise BackendUnavailable(f"backend '{name}' is not ready: {reason}", {"error": reason}) from err
        self._warm_failures.pop(name, None)
        return info

    def close(self) -> None:
        for backend in self.backends.values():
            try:
                if backend.pool is not None:
                    backend.pool.drain()  # the entries this process started
                backend.close()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("closing backend %s failed", backend.name)
