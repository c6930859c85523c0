"""What confinement a backend gets: the server-wide mode and per-resource limits.

The mode is ``server.isolation`` (or ``AGENTFLOW_ISOLATION``): ``"bwrap"`` (the default)
confines every session; ``"none"`` runs session code as the server's own user with no
namespaces or cgroups, and must be chosen explicitly — ``/health`` and the start-up log
then say so.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from .errors import IsolationError

__all__ = ["IsolationMode", "Limits", "isolation_mode", "LIMIT_KEYS"]


class IsolationMode(str, enum.Enum):
    BWRAP = "bwrap"
    NONE = "none"


def isolation_mode(value: Any) -> IsolationMode:
    """The mode named by a config value; ``None`` means the default (``bwrap``)."""
    if value is None or value == "":
        return IsolationMode.BWRAP
    try:
        return IsolationMode(str(value).lower())
    except ValueError:
        raise IsolationError(f"isolation must be 'bwrap' or 'none', got {value!r}") from None


NETWORKS = ("none", "full")
LIMIT_KEYS = frozenset({"memory_mb", "max_processes", "disk_mb", "file_size_mb", "cpu_seconds", "network"})


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-session limits. Memory and process count hold for the whole session (a
    cgroup), not per process; ``disk_mb`` caps the workspace (a size-limited tmpfs,
    whose pages also count as the session's memory)."""

    memory_mb: int = 2048
    max_processes: int = 256
    disk_mb: int = 1024
    file_size_mb: int = 256
    cpu_seconds: int = 600
    """CPU seconds per process (RLIMIT_CPU): a busy loop dies, a long session does not."""
    network: str = "none"
    """``none``: a network namespace with only its own loopback. ``full``: outside
    addresses through a user-mode network stack (slirp4netns) that cannot reach the
    host's loopback, so the server's port and other local services stay out of reach."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], resource: str, defaults: "Limits | None" = None) -> "Limits":
        """Limits from a backend's config section (missing keys keep ``defaults``)."""
        base = defaults or cls()
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in config:
                continue
            raw = config[field.name]
            if field.name == "network":
                if raw not in NETWORKS:
                    raise IsolationError(f"resource '{resource}': network must be one of {', '.join(NETWORKS)}, "
                                         f"got {raw!r}")
                values["network"] = raw
                continue
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise IsolationError(f"resource '{resource}': {field.name} must be a positive integer, got {raw!r}")
            try:
                number = int(raw)
            except ValueError:
                raise IsolationError(f"resource '{resource}': {field.name} must be a positive integer, "
                                     f"got {raw!r}") from None
            if number <= 0:
                raise IsolationError(f"resource '{resource}': {field.name} must be a positive integer, got {raw!r}")
            values[field.name] = number
        return dataclasses.replace(base, **values)
