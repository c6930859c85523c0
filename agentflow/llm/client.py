"""A small chat-completions client on the ``openai`` package.

:class:`ChatModel` sends one chat request and returns a :class:`ChatReply` made of plain
dataclasses (content, tool calls with their raw argument text, token usage, finish
reason), so rollout and synthesis never touch ``openai`` types. Retries of 429, 5xx and
connection failures are done by the ``openai`` client itself (``max_retries``, with its
exponential backoff that honours ``Retry-After``); whatever still fails is raised as an
:class:`~agentflow.llm.errors.LLMError`.

Usage::

    from agentflow.llm import ChatModel

    model = ChatModel("gpt-4.1-mini", api_key="sk-...", base_url="https://api.openai.com/v1")
    reply = model.chat([{"role": "user", "content": "2+2?"}])
    print(reply.content, reply.usage.total_tokens)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from .errors import (
    LLMAuthError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMServerError,
    LLMTimeoutError,
)

__all__ = ["ChatModel", "ChatReply", "ToolCallRequest", "Usage"]

log = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "EMPTY"
"""Sent when no key is configured: local servers (vLLM, llama.cpp) accept any key, and
the ``openai`` client refuses to start without one."""


@dataclasses.dataclass(frozen=True)
class ToolCallRequest:
    """One tool call the model asked for."""

    id: str
    """The call id; the answering ``tool`` message must carry it as ``tool_call_id``."""
    name: str
    """The function name exactly as the model wrote it (it may not exist)."""
    arguments: str
    """The raw argument text; usually JSON, but models do write malformed JSON."""

    def parse_arguments(self) -> dict:
        """The arguments as a dict (empty text means no arguments).

        Raises:
            ValueError: the text is not JSON, or not a JSON object; the message says why.
        """
        text = (self.arguments or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"arguments are not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(value, dict):
            raise ValueError(f"arguments must be a JSON object, not {type(value).__name__}")
        return value

    def to_openai(self) -> dict:
        """The call in the shape of an assistant message's ``tool_calls`` item."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token counts of one request (zeros when the provider reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    """The part of ``prompt_tokens`` the provider served from its prompt cache
    (``usage.prompt_tokens_details.cached_tokens``; priced lower, see
    :mod:`agentflow.llm.pricing`)."""

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.total_tokens + other.total_tokens,
                     self.cached_prompt_tokens + other.cached_prompt_tokens)


@dataclasses.dataclass(frozen=True)
class ChatReply:
    """The first choice of a chat completion."""

    content: str | None
    tool_calls: list[ToolCallRequest]
    usage: Usage
    finish_reason: str | None
    model: str | None = None
    """The model name the provider reports."""
    request_id: str | None = None
    """The provider's ``x-request-id``."""
    latency_ms: float = 0.0
    """Wall time of the request, retries included."""
    reasoning: str | None = None
    """``reasoning_content`` of reasoning models, when the provider sends it."""
    cache_hit: bool = False
    """Served by the model-call cache (:mod:`agentflow.llm.cache`): no request was made,
    nothing was paid; ``usage`` is what the provider reported when the call was made."""

    def to_message(self) -> dict:
        """The assistant message to append to the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg


_http_lock = threading.Lock()
_http: tuple[int, Any] | None = None


def _shared_http_client() -> Any:
    """The HTTP client (connection pool and TLS context) of every :class:`ChatModel` of
    this process: ``openai`` builds one per client otherwise, and building one loads the
    CA bundle (about 30 ms, every rollout paid it for each model it made). It is what
    ``openai`` would build (``DefaultHttpxClient``: its limits, redirects, proxies from
    the environment); request timeouts and retries stay per model. A forked child builds
    its own, never using its parent's connections."""
    global _http
    with _http_lock:
        if _http is None or _http[0] != os.getpid():
            _http = (os.getpid(), openai.DefaultHttpxClient())
        return _http[1]


class ChatModel:
    """An OpenAI-compatible chat model. Thread-safe: share one per run.

    Args:
        model: Model name sent with every request.
        api_key: API key (default: ``OPENAI_API_KEY``, else a placeholder that local
            servers accept).
        base_url: Endpoint, e.g. ``http://localhost:8000/v1`` (default: ``OPENAI_BASE_URL``
            or OpenAI's).
        timeout: Seconds per request attempt.
        max_retries: Retries of 429, 5xx, 408/409 and connection errors, with backoff.
        temperature: Default sampling temperature (provider default when ``None``).
        max_tokens: Default completion token limit (provider default when ``None``).
        extra_params: Further fields sent with every request (e.g. ``{"top_p": 0.9}``).
    """

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_params: dict | None = None,
    ):
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_params = dict(extra_params or {})
        self._client = openai.OpenAI(
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY,
            base_url=base_url or None,
            timeout=timeout,
            max_retries=max_retries,
            http_client=_shared_http_client(),
        )

    def chat(
        self,
        messages: list[dict],
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
        *,
        timeout: float | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **extra: Any,
    ) -> ChatReply:
        """Send one chat-completions request.

        Args:
            messages: The conversation (OpenAI message dicts).
            tools: Function tools offered to the model (OpenAI ``tools`` list).
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a function choice.
            timeout: Seconds for this request (default: the model's ``timeout``).
            temperature, max_tokens: Override the model's defaults for this request.
            extra: Further request fields.

        Returns:
            The first choice as a :class:`ChatReply`.

        Raises:
            LLMRateLimitError, LLMServerError, LLMConnectionError, LLMTimeoutError: still
                failing after ``max_retries`` retries (``retryable`` is true).
            LLMAuthError: the key was refused.
            LLMBadRequestError: the provider rejected the request.
            LLMResponseError: the reply is not a usable completion.
        """
        body = self.request_body(messages, tools, tool_choice, temperature=temperature, max_tokens=max_tokens,
                                 **extra)
        return self.send(body, timeout=timeout)

    def request_body(self, messages: list[dict], tools: list[dict] | None = None,
                     tool_choice: str | dict | None = None, *, temperature: float | None = None,
                     max_tokens: int | None = None, **extra: Any) -> dict[str, Any]:
        """The chat-completions request :meth:`chat` sends (everything but the timeout,
        which is transport): what the model-call cache keys on."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.extra_params, **extra}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        temperature = self.temperature if temperature is None else temperature
        if temperature is not None:
            body["temperature"] = temperature
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    @property
    def endpoint(self) -> str:
        """The base URL requests go to, as the ``openai`` client resolved it (no trailing ``/``)."""
        return str(self._client.base_url).rstrip("/")

    def send(self, body: dict[str, Any], *, timeout: float | None = None) -> ChatReply:
        """Send a request built by :meth:`request_body`; see :meth:`chat`."""
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        start = time.perf_counter()
        try:
            # The client's own POST, not ``chat.completions.create(**body)``: ``create``
            # first walks the whole request through the parameter types
            # (``maybe_transform``), which changes nothing in a chat request made of plain
            # JSON (no field of it has an alias or a format) yet cost as much CPU as the
            # rest of the call (1.0 of 1.95 ms with six tools), and more with every turn
            # of the conversation. Retries, timeouts, error types and the typed
            # ``ChatCompletion`` reply are the client's, as before; fields that ``create``
            # does not name (a vLLM ``top_k``) are sent as given instead of failing.
            completion = self._client.post("/chat/completions", body=body, cast_to=ChatCompletion,
                                           options=options)
        except openai.OpenAIError as err:
            raise _translate(err, self.model) from err
        latency_ms = (time.perf_counter() - start) * 1000
        return _to_reply(completion, latency_ms)

    def __repr__(self) -> str:
        return f"ChatModel(model={self.model!r}, base_url={self.base_url!r})"


def _to_reply(completion: Any, latency_ms: float) -> ChatReply:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise LLMResponseError(f"the model returned no choices: {str(completion)[:200]}",
                               request_id=getattr(completion, "_request_id", None))
    choice = choices[0]
    message = choice.message
    calls = []
    for i, call in enumerate(message.tool_calls or []):
        function = getattr(call, "function", None)
        if function is None:  # a custom (non-function) tool call: not something we offered
            continue
        calls.append(ToolCallRequest(id=call.id or f"call_{i}", name=function.name or "",
                                     arguments=function.arguments or ""))
    usage = completion.usage
    return ChatReply(
        content=message.content,
        tool_calls=calls,
        usage=Usage(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            total_tokens=int(getattr(usage, "total_tokens", 0) or 0),
            cached_prompt_tokens=int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0),
        ) if usage is not None else Usage(),
        finish_reason=choice.finish_reason,
        model=getattr(completion, "model", None),
        request_id=getattr(completion, "_request_id", None),
        latency_ms=latency_ms,
        reasoning=getattr(message, "reasoning_content", None),
    )


def _translate(err: openai.OpenAIError, model: str) -> LLMError:
    """Map an ``openai`` exception to the matching :class:`LLMError`."""
    if isinstance(err, openai.APITimeoutError):
        return LLMTimeoutError(f"model request timed out: {err}")
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return LLMConnectionError(f"cannot reach the model endpoint: {cause or err}")
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        rid = getattr(err, "request_id", None)
        detail = _error_detail(err)
        if status == 429:
            return LLMRateLimitError(f"rate limited by the model provider: {detail}", status=status, request_id=rid)
        if status in (401, 403):
            return LLMAuthError(f"the model provider refused the API key or model {model!r}: {detail}",
                                status=status, request_id=rid)
        if status >= 500 or status in (408, 409):
            return LLMServerError(f"model provider error: {detail}", status=status, request_id=rid)
        return LLMBadRequestError(f"the model provider rejected the request: {detail}", status=status, request_id=rid)
    if isinstance(err, openai.APIResponseValidationError):
        return LLMResponseError(f"unusable reply from the model: {err}")
    return LLMError(f"model request failed: {err}")


def _error_detail(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(err.message or err)
