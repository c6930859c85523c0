"""Python client of the AgentFlow sandbox server.

``Sandbox`` is the everyday entry point; ``HTTPServiceClient`` is the low-level client
with one method per HTTP endpoint. Protocol failures raise ``SandboxError`` subclasses;
tool failures are returned as results.
"""
from __future__ import annotations

import logging

from .client import HTTPClientConfig as HTTPClientConfig
from .client import HTTPServiceClient as HTTPServiceClient
from .errors import SandboxAuthError as SandboxAuthError
from .errors import SandboxConnectionError as SandboxConnectionError
from .errors import SandboxError as SandboxError
from .errors import SandboxRequestError as SandboxRequestError
from .errors import SandboxServerError as SandboxServerError
from .errors import SandboxServerStartError as SandboxServerStartError
from .errors import SandboxTimeoutError as SandboxTimeoutError
from .sandbox import Sandbox as Sandbox

__all__ = [
    "Sandbox",
    "HTTPClientConfig",
    "HTTPServiceClient",
    "SandboxError",
    "SandboxConnectionError",
    "SandboxTimeoutError",
    "SandboxServerStartError",
    "SandboxAuthError",
    "SandboxRequestError",
    "SandboxServerError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
