"""Errors raised by :mod:`agentflow.llm`.

Every ``openai`` exception is translated here, where it enters AgentFlow, so callers
never import the transport. Each error carries ``status`` (the HTTP status, when there
was a response) and ``request_id`` (the provider's ``x-request-id``, when it sent one).

``retryable`` says whether running the same request again later may succeed: rate
limits, server errors, timeouts and broken connections are retryable (the ``openai``
client has already retried them ``max_retries`` times with backoff); a bad request or a
wrong key is not. Rollout treats retryable errors as *infrastructure* failures that a
resumed run tries again.
"""
from __future__ import annotations

__all__ = [
    "LLMError",
    "LLMConnectionError",
    "LLMTimeoutError",
    "LLMRateLimitError",
    "LLMServerError",
    "LLMAuthError",
    "LLMBadRequestError",
    "LLMResponseError",
]


class LLMError(Exception):
    """Base of every error raised by :mod:`agentflow.llm`."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(details)})" if details else self.message


class LLMConnectionError(LLMError):
    """The model endpoint could not be reached, or the connection broke, after all
    retries. Retrying later is safe (a chat request has no side effects)."""

    retryable = True


class LLMTimeoutError(LLMConnectionError):
    """No response arrived within the request timeout, after all retries. Retry-safe."""


class LLMRateLimitError(LLMError):
    """The provider answered 429 on every try. Retry later, or lower concurrency."""

    retryable = True


class LLMServerError(LLMError):
    """The provider answered 5xx (or 408/409) on every try. A later retry may succeed."""

    retryable = True


class LLMAuthError(LLMError):
    """The provider refused the API key (401) or the model is not allowed for it (403).
    Retrying does not help until the key or permissions are fixed; rollout still counts it
    as an infrastructure failure so a resumed run with a good key tries again."""

    retryable = True


class LLMBadRequestError(LLMError):
    """The provider rejected the request itself (400/404/422: unknown model, context too
    long, invalid tool schema). Sending it again unchanged will fail again."""


class LLMResponseError(LLMError):
    """The provider answered 200 with something that is not a usable chat completion
    (no choices, unparseable body). A retry may succeed."""

    retryable = True
