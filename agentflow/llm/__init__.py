"""OpenAI-compatible chat models for rollout and synthesis.

:class:`ChatModel` wraps the ``openai`` client: one :meth:`ChatModel.chat` call returns a
:class:`ChatReply` (content, :class:`ToolCallRequest` list, :class:`Usage`,
``finish_reason``), and ``openai`` errors arrive as :class:`LLMError` subclasses.
"""
from __future__ import annotations

import logging

from .client import ChatModel as ChatModel
from .client import ChatReply as ChatReply
from .client import ToolCallRequest as ToolCallRequest
from .client import Usage as Usage
from .errors import LLMAuthError as LLMAuthError
from .errors import LLMBadRequestError as LLMBadRequestError
from .errors import LLMConnectionError as LLMConnectionError
from .errors import LLMError as LLMError
from .errors import LLMRateLimitError as LLMRateLimitError
from .errors import LLMResponseError as LLMResponseError
from .errors import LLMServerError as LLMServerError
from .errors import LLMTimeoutError as LLMTimeoutError

__all__ = [
    "ChatModel",
    "ChatReply",
    "ToolCallRequest",
    "Usage",
    "LLMError",
    "LLMConnectionError",
    "LLMTimeoutError",
    "LLMRateLimitError",
    "LLMServerError",
    "LLMAuthError",
    "LLMBadRequestError",
    "LLMResponseError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
