"""Protocol errors: one class per response code of SPEC §2, rendered by the server."""
from __future__ import annotations


class ApiError(Exception):
    """Base of every error answered with an envelope instead of a tool result."""

    code = 5000
    http_status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, data: dict | None = None):
        self.message = message or self.default_message
        self.data = data or {}
        super().__init__(self.message)


class MalformedRequest(ApiError):
    """Bad JSON, wrong body shape, or a body over the size limit (1000)."""

    code, http_status, default_message = 1000, 400, "malformed request"


class ToolNotFound(ApiError):
    """No tool under this name or alias (1001); the message lists close names."""

    code, http_status, default_message = 1001, 404, "tool not found"


class ParameterError(ApiError):
    """A tool parameter (or a request field naming a resource) is wrong (1002)."""

    code, http_status, default_message = 1002, 400, "parameter error"


class SessionError(ApiError):
    """No such session, a session that failed to start, or one that expired (1003)."""

    code, http_status, default_message = 1003, 409, "session error"


class Unauthorized(ApiError):
    """Missing or wrong bearer token, or a shutdown from a caller not allowed to (1004)."""

    code, http_status, default_message = 1004, 401, "unauthorized"


class BackendUnavailable(ApiError):
    """The backend's warmup failed or is still pending (2003); data.error says why."""

    code, http_status, default_message = 2003, 503, "backend not ready"


class RequestInProgress(ApiError):
    """A retry waited its whole limit for a live process still running the request with
    this ``X-Request-ID`` (1005); retrying later with the same id collects the answer."""

    code, http_status, default_message = 1005, 409, "request still running"


class CallInterrupted(ApiError):
    """The process running the request with this ``X-Request-ID`` died mid-run (2004).

    Its outcome is unknown, so the retry does not run it again: like a tool failure it
    is a result (HTTP 200) the agent sees, with ``data`` saying what was cut off.
    """

    code, http_status, default_message = 2004, 200, "interrupted"


class InternalError(ApiError):
    """Anything unexpected (5000); details go to the server log only."""


HTTP_STATUS = {cls.code: cls.http_status for cls in (
    MalformedRequest, ToolNotFound, ParameterError, SessionError, Unauthorized, RequestInProgress,
    CallInterrupted, BackendUnavailable, InternalError)}
"""HTTP status of each envelope code; codes not listed (0, 2001, 2002) are 200."""


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 200)
