"""Errors raised by the sandbox client.

Only *protocol* failures raise. A tool that ran and failed (code 2001), timed out
(2002), whose backend is not ready (2003) or whose run was cut off by the death of the
server process running it (2004) is a normal result: the client returns its envelope
and the agent sees it.

Every error carries what the server said about it: ``code`` (the envelope code, when
there was one), ``message``, ``request_id`` (the ``X-Request-ID`` the call was sent
with), ``status`` (the HTTP status) and ``data`` (the envelope's ``data``).
"""
from __future__ import annotations

__all__ = [
    "SandboxError",
    "SandboxConnectionError",
    "SandboxTimeoutError",
    "SandboxServerStartError",
    "SandboxAuthError",
    "SandboxRequestError",
    "SandboxServerError",
]


class SandboxError(Exception):
    """Base of every error raised by :mod:`agentflow.sandbox`."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        request_id: str | None = None,
        status: int | None = None,
        data: dict | None = None,
        url: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id
        self.status = status
        self.data = data if data is not None else {}
        self.url = url

    @property
    def http_status(self) -> int | None:
        """The HTTP status of the response (same as ``status``)."""
        return self.status

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}" if self.code is not None else self.message
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        return f"{text} ({', '.join(details)})" if details else text


class SandboxConnectionError(SandboxError):
    """The server could not be reached, or the connection broke, after all retries.

    Raised for refused or timed-out connections and for connections dropped before a
    response arrived. Retrying later is safe: requests carry an ``X-Request-ID`` that
    the server replays instead of running a tool twice.
    """


class SandboxTimeoutError(SandboxConnectionError):
    """No response arrived within the client's timeout.

    Read timeouts are not retried automatically (the call may still be running on
    the server). Sending the same request again with ``request_id=err.request_id``
    (see :meth:`HTTPServiceClient.request`) returns its result without a second run.
    """


class SandboxServerStartError(SandboxError):
    """``auto_start_server=True`` could not start a local server, or it did not answer
    ``/health`` in time. The message ends with the server's last log lines and
    ``data["log_path"]`` names the full log (kept on failure). Retrying is safe once
    the cause (port in use, bad config) is fixed."""


class SandboxAuthError(SandboxError):
    """The server refused the bearer token (code 1004, HTTP 401): it is missing or
    wrong, or the caller may not shut the server down. Retrying will not help."""


class SandboxRequestError(SandboxError):
    """The server rejected the request (codes 1000-1003): malformed body, unknown tool,
    bad parameter, or a session error. ``code`` says which. Retrying the same request
    will not help."""


class SandboxServerError(SandboxError):
    """The server failed internally (code 5000) or answered with something that is not
    an AgentFlow envelope (e.g. a proxy's 502 after retries). Details are in the
    server log under ``request_id``. A retry may succeed."""
