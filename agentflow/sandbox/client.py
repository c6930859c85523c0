"""Low-level HTTP client: one method per endpoint of the AgentFlow sandbox server.

:class:`HTTPServiceClient` wraps one pooled :class:`requests.Session`. Each method
sends one request and returns the server's envelope ``{code, message, data, meta}``
as a ``dict``. Tool results are returned whatever their code (2001 tool failed, 2002
timeout, 2003 backend not ready, 2004 interrupted); protocol failures raise a
:class:`~agentflow.sandbox.errors.SandboxError` subclass.

Retries live on the transport adapter (a urllib3 ``Retry``): connection errors,
connections dropped before the response, and HTTP 502/503/504 are retried with
exponential backoff and jitter. Every request carries one ``X-Request-ID`` that is
reused by all of its retries, so a retried ``POST /execute`` is answered from the
server's record (``meta.replayed: true``) and never runs the tool twice. When the
server process running the first attempt was killed mid-call, the retry's answer is
``2004 interrupted`` (the call may or may not have taken effect; it is not run again).

Usage::

    from agentflow.sandbox.client import HTTPServiceClient, HTTPClientConfig

    client = HTTPServiceClient(config=HTTPClientConfig(base_url="http://127.0.0.1:18890"))
    result = client.execute("worker_1", "bash:run", {"command": "echo hi"})
    print(result["code"], result["data"])
    client.close()
"""
from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from ._envelope import RESULT_CODES, decode, root_cause
from .errors import SandboxConnectionError, SandboxError, SandboxTimeoutError

__all__ = ["HTTPClientConfig", "HTTPServiceClient", "DEFAULT_SERVER_URL", "RESULT_CODES"]

logger = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://127.0.0.1:18890"
_RETRY_STATUSES = (502, 503, 504)
# Extra read time granted beyond a tool's own timeout before the client gives up.
_TOOL_TIMEOUT_MARGIN = 10.0


@dataclasses.dataclass
class HTTPClientConfig:
    """Settings of :class:`HTTPServiceClient`.

    Args:
        base_url: Server URL (``http://host:port``, optionally with a reverse proxy's
            path prefix; not ``/api/v1``, where the server speaks the AgentFlow
            reference's protocol instead of this client's).
        timeout: Seconds to wait for a response (read timeout). A call with a larger
            tool ``timeout`` waits for that plus a margin.
        max_retries: Retries after the first attempt, for connection errors, dropped
            connections and HTTP 502/503/504. ``0`` disables retries.
        api_token: Bearer token; defaults to the ``AGENTFLOW_API_TOKEN`` environment
            variable.
        connect_timeout: Seconds for one TCP connection attempt (default: see below).
        backoff_factor: Retry *n* (n ≥ 2) sleeps ``backoff_factor * 2**(n-1)`` s;
            the first retry is immediate.
        backoff_jitter: Up to this many random seconds are added to each backoff.
        backoff_max: Upper bound of one backoff sleep (default: see below).
        pool_maxsize: Connections kept alive per host (≥ the number of threads that
            share the client).
        trust_env: Read proxies and ``.netrc`` from the environment (off by default:
            the sandbox is usually on loopback or in the same cluster, and reading
            the environment costs time on every call).

    Unless ``connect_timeout`` and ``backoff_max`` are set, connection attempts and
    backoff sleeps share the ``timeout`` budget: each gets at most
    ``timeout / (2 * (max_retries + 1))`` (connect ≤ 10 s, sleep ≤ 4 s), so a server
    that is down is reported within about ``timeout``.
    """

    base_url: str = DEFAULT_SERVER_URL
    timeout: float = 60.0
    max_retries: int = 3
    api_token: str | None = None
    connect_timeout: float | None = None
    backoff_factor: float = 0.25
    backoff_jitter: float = 0.1
    backoff_max: float | None = None
    pool_maxsize: int = 64
    trust_env: bool = False

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.api_token is None:
            self.api_token = os.environ.get("AGENTFLOW_API_TOKEN") or None
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")

    @property
    def _share(self) -> float:
        return self.timeout / (2 * (self.max_retries + 1))

    @property
    def effective_connect_timeout(self) -> float:
        """The connect timeout actually used (see ``connect_timeout``)."""
        if self.connect_timeout is not None:
            return self.connect_timeout
        return max(0.05, min(10.0, self._share))

    @property
    def effective_backoff_max(self) -> float:
        """The longest backoff sleep actually used (see ``backoff_max``)."""
        if self.backoff_max is not None:
            return self.backoff_max
        return min(4.0, self._share)


class _Retry(Retry):
    """urllib3 ``Retry`` that never retries a read *timeout*.

    A read timeout means the server is still working on the call; retrying would only
    multiply the caller's timeout. Connections dropped before a response (the server
    or a proxy went away) are still retried.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _new_request_id() -> str:
    return uuid.uuid4().hex


class HTTPServiceClient:
    """One pooled, retrying HTTP session to an AgentFlow sandbox server.

    Thread-safe: one instance can be shared by many threads (the connection pool
    holds ``config.pool_maxsize`` connections).

    Args:
        config: Connection settings; ``HTTPClientConfig()`` when omitted.
        **kwargs: Shortcut for config fields (``HTTPServiceClient(base_url=...)``).
    """

    def __init__(self, config: HTTPClientConfig | None = None, **kwargs: Any):
        if config is None:
            config = HTTPClientConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        self._session = self._build_session(config)

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _build_session(config: HTTPClientConfig) -> requests.Session:
        retries = config.max_retries
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET", "POST", "HEAD", "OPTIONS"}),
            status_forcelist=_RETRY_STATUSES,
            backoff_factor=config.backoff_factor,
            backoff_jitter=config.backoff_jitter,
            backoff_max=config.effective_backoff_max,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=config.pool_maxsize, max_retries=retry)
        session = requests.Session()
        session.trust_env = config.trust_env
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"Accept": "application/json", "User-Agent": "agentflow-sandbox-client"})
        if config.api_token:
            session.headers["Authorization"] = f"Bearer {config.api_token}"
        return session

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        self._session.close()

    def __enter__(self) -> "HTTPServiceClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        params: dict | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        envelope: bool = True,
        results_ok: bool = False,
    ) -> dict:
        """Send one request and return the decoded response.

        Args:
            method: ``GET`` or ``POST``.
            path: Endpoint path, e.g. ``/execute``.
            body: JSON body (POST).
            params: Query parameters (GET).
            request_id: The ``X-Request-ID`` to send; a fresh uuid4 hex when omitted.
                Sending the id of an earlier call returns that call's stored result.
            timeout: Read timeout in seconds (``config.timeout`` when omitted).
            envelope: Whether the endpoint answers with the envelope (all but
                ``/health`` and ``/openapi.json``).
            results_ok: Return a batch envelope (one with ``data.results``) even when
                its top code reports a failed item.

        Returns:
            The envelope (or the raw JSON document when ``envelope`` is false).

        Raises:
            SandboxConnectionError: the server could not be reached after retries.
            SandboxTimeoutError: no response within ``timeout``.
            SandboxAuthError: code 1004 / HTTP 401.
            SandboxRequestError: codes 1000-1003.
            SandboxServerError: code 5000 or a response that is not JSON.
        """
        url = self.config.base_url + path
        request_id = request_id or _new_request_id()
        read_timeout = timeout if timeout is not None else self.config.timeout
        try:
            resp = self._session.request(
                method,
                url,
                json=body,
                params=params,
                headers={"X-Request-ID": request_id},
                timeout=(self.config.effective_connect_timeout, read_timeout),
            )
        except requests.Timeout as err:
            if isinstance(err, requests.ConnectTimeout):
                raise SandboxConnectionError(
                    f"could not connect to the sandbox server at {url} within "
                    f"{self.config.effective_connect_timeout:g} s (after {self.config.max_retries} retries)",
                    request_id=request_id, url=url,
                ) from err
            raise SandboxTimeoutError(
                f"no response from {url} within {read_timeout:g} s; the call may still be running on the "
                f"server (send it again with request_id={request_id!r} to get its result)",
                request_id=request_id, url=url,
            ) from err
        except requests.ConnectionError as err:
            raise SandboxConnectionError(
                f"could not reach the sandbox server at {url} after {self.config.max_retries} retries: "
                f"{root_cause(err)}",
                request_id=request_id, url=url,
            ) from err
        except requests.RequestException as err:
            raise SandboxError(f"request to {url} failed: {err}", request_id=request_id, url=url) from err
        return decode(resp, url, request_id, envelope, results_ok)

    def _post(self, path: str, body: dict, timeout: float | None = None) -> dict:
        return self.request("POST", path, body, timeout=timeout)

    def _get(self, path: str, params: dict | None = None, envelope: bool = True) -> dict:
        return self.request("GET", path, params=params, envelope=envelope)

    # ------------------------------------------------------------------ endpoints

    def execute(
        self,
        worker_id: str,
        action: str,
        params: dict | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
    ) -> dict:
        """``POST /execute``: run one tool.

        Args:
            worker_id: Caller identity; sessions are per (worker, resource).
            action: Tool name, ``resource:tool`` (``bash:run``) or an alias.
            params: Tool parameters.
            timeout: Tool timeout in seconds (the server caps it).
            trace_id: Correlates the call with a rollout trajectory.

        Returns:
            The envelope; ``code`` 0, 2001 (tool failed), 2002 (timed out), 2003
            (backend not ready) and 2004 (interrupted: the server process running it
            died, a retry did not run it again) are all results.
        """
        body: dict[str, Any] = {"worker_id": worker_id, "action": action, "params": params or {}}
        if timeout is not None:
            body["timeout"] = timeout
        if trace_id is not None:
            body["trace_id"] = trace_id
        return self._post("/execute", body, timeout=self._read_timeout(timeout))

    def execute_batch(
        self,
        worker_id: str,
        actions: list[dict],
        parallel: bool = False,
        stop_on_error: bool = True,
        trace_id: str | None = None,
    ) -> dict:
        """``POST /execute/batch``: run several tools in one request.

        Args:
            worker_id: Caller identity.
            actions: ``[{"action": ..., "params": {...}, "timeout": ...}, ...]``.
            parallel: Run the actions concurrently.
            stop_on_error: Stop at the first failure (sequential mode).
            trace_id: Correlates the calls with a rollout trajectory.

        Returns:
            The envelope; ``data.results`` holds one envelope per executed action.
            Failures of single actions are results, not exceptions.
        """
        body: dict[str, Any] = {
            "worker_id": worker_id, "actions": list(actions), "parallel": parallel, "stop_on_error": stop_on_error,
        }
        if trace_id is not None:
            body["trace_id"] = trace_id
        timeouts = [a.get("timeout") or 0 for a in actions if isinstance(a, dict)]
        longest = max(timeouts) if parallel and timeouts else sum(timeouts)
        read_timeout = self._read_timeout(longest or None)
        return self.request("POST", "/execute/batch", body, timeout=read_timeout, results_ok=True)

    def create_session(
        self,
        worker_id: str,
        resource_type: str,
        config: dict | None = None,
        custom_name: str | None = None,
    ) -> dict:
        """``POST /session/create``. An existing session is success with
        ``data.created == False``."""
        body: dict[str, Any] = {"worker_id": worker_id, "resource_type": resource_type}
        if config is not None:
            body["config"] = config
        if custom_name is not None:
            body["custom_name"] = custom_name
        return self._post("/session/create", body)

    def destroy_session(self, worker_id: str, resource_type: str) -> dict:
        """``POST /session/destroy``: end the worker's session of this resource."""
        return self._post("/session/destroy", {"worker_id": worker_id, "resource_type": resource_type})

    def list_sessions(self, worker_id: str) -> dict:
        """``POST /session/list``: the worker's live sessions in ``data.sessions``."""
        return self._post("/session/list", {"worker_id": worker_id})

    def refresh_session(self, worker_id: str, resource_type: str | None = None) -> dict:
        """``POST /session/refresh``: extend the TTL of one (or every) session."""
        body: dict[str, Any] = {"worker_id": worker_id}
        if resource_type is not None:
            body["resource_type"] = resource_type
        return self._post("/session/refresh", body)

    def list_tools(self, include_hidden: bool = False, format: str | None = None) -> dict:
        """``GET /tools``: ``data.tools``; ``format="openai"`` gives the list ready for
        ``chat.completions.create(tools=...)``."""
        params: dict[str, str] = {}
        if include_hidden:
            params["include_hidden"] = "true"
        if format is not None:
            params["format"] = format
        return self._get("/tools", params or None)

    def health(self) -> dict:
        """``GET /health``: ``{"status": "ok", "version": ...}`` (not an envelope)."""
        return self._get("/health", envelope=False)

    def warmup(self, backends: list[str] | None = None) -> dict:
        """``POST /warmup``: load the given backends (all when ``None`` or empty)."""
        return self._post("/warmup", {"backends": list(backends or [])})

    def warmup_status(self) -> dict:
        """``GET /warmup/status``: ``data.backends = {name: {loaded, warmed_up, error?}}``."""
        return self._get("/warmup/status")

    def shutdown(self, force: bool = False, cleanup_sessions: bool = True) -> dict:
        """``POST /shutdown``: clean sessions, then the server exits. Needs a valid token
        (or, with no token configured, a loopback caller)."""
        return self._post("/shutdown", {"force": force, "cleanup_sessions": cleanup_sessions})

    def openapi(self) -> dict:
        """``GET /openapi.json``: the OpenAPI 3 document (not an envelope)."""
        return self._get("/openapi.json", envelope=False)

    # ------------------------------------------------------------------ helpers

    def _read_timeout(self, tool_timeout: float | None) -> float:
        if not tool_timeout:
            return self.config.timeout
        return max(self.config.timeout, float(tool_timeout) + _TOOL_TIMEOUT_MARGIN)

    def __repr__(self) -> str:
        return f"HTTPServiceClient(base_url={self.config.base_url!r})"
