"""Errors of the confinement layer."""
from __future__ import annotations


class IsolationError(Exception):
    """A confined session could not be started, reached or ended."""


class IsolationUnavailable(IsolationError):
    """The machine lacks what confinement needs (bubblewrap, user namespaces, cgroups).
    Raised at server start, so a backend fails closed instead of running unconfined."""


class SupervisorError(IsolationError):
    """The session's supervisor is gone or answered something that is not a reply."""


class SupervisorGone(SupervisorError):
    """Nothing listens on the session's socket: the supervisor is not running (the
    session's code killed it, or the machine restarted). The request never ran."""


class SupervisorTimeout(SupervisorError):
    """The supervisor did not answer within the call's time (plus a grace period)."""
