"""``Sandbox``: the user-facing client of the AgentFlow sandbox server.

Every operation exists twice: ``foo_sync(...)`` does the work (a blocking HTTP call
through :class:`HTTPServiceClient`), and ``async foo(...)`` runs ``foo_sync`` on a
shared thread pool so that an event loop never blocks. Both return the same value.

Usage::

    from agentflow.sandbox import Sandbox

    with Sandbox(worker_id="my_worker", auto_start_server=True) as sandbox:
        result = sandbox.execute_sync("bash:run", {"command": "echo hello"})
        print(result["data"]["stdout"])

    async with Sandbox() as sandbox:
        result = await sandbox.execute("bash:run", {"command": "echo hello"})
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import logging
import os
import threading
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import requests

from ._server import LocalServer
from .client import DEFAULT_SERVER_URL, HTTPClientConfig, HTTPServiceClient
from .errors import SandboxConnectionError

__all__ = ["Sandbox"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Threads that run the async twins; shared by all Sandbox objects of the process.
ASYNC_THREADS = 64
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=ASYNC_THREADS, thread_name_prefix="agentflow-sandbox")
    return _executor


async def _in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``func(*args, **kwargs)`` on the shared pool (like ``asyncio.to_thread``, but the
    pool is large enough for many concurrent agents: the default one has
    ``cpu_count + 4`` threads)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await loop.run_in_executor(_get_executor(), call)


def _as_list(resources: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if resources is None:
        return None
    return [resources] if isinstance(resources, str) else list(resources)


class Sandbox:
    """A connection to one AgentFlow sandbox server, acting as one worker.

    Args:
        server_url: Server URL.
        worker_id: Identity for sessions; ``worker_<8 hex>`` when omitted. Sandboxes
            with different worker ids never share sessions.
        auto_start_server: Start a local server (``agentflow serve``) on the URL's
            port when none answers, and stop it on :meth:`close`.
        config_path: Server config file for an auto-started server.
        timeout: Seconds to wait for a response; also bounds how long a server that
            is down takes to be reported.
        max_retries: Retries for connection errors and HTTP 502/503/504.
        api_token: Bearer token (default: ``AGENTFLOW_API_TOKEN``). An auto-started
            server is given the same token.
        server_startup_timeout: Seconds to wait for an auto-started server.
        pool_maxsize: Connections kept alive to the server (at least the number of
            threads that call at once, this object's and those of :meth:`as_worker`).

    The methods work without an explicit :meth:`start` (the first call starts).
    One object may be used from many threads at once; :meth:`as_worker` gives
    another worker id on the same connection pool.
    """

    def __init__(
        self,
        server_url: str = DEFAULT_SERVER_URL,
        worker_id: str | None = None,
        auto_start_server: bool = False,
        config_path: str | os.PathLike | None = None,
        timeout: float = 60,
        max_retries: int = 3,
        api_token: str | None = None,
        *,
        server_startup_timeout: float = 60.0,
        pool_maxsize: int | None = None,
    ):
        self.server_url = server_url.rstrip("/")
        self.worker_id = worker_id or f"worker_{uuid.uuid4().hex[:8]}"
        self.auto_start_server = auto_start_server
        self.config_path = config_path
        self.timeout = timeout
        self.max_retries = max_retries
        self.server_startup_timeout = server_startup_timeout
        pool = {"pool_maxsize": pool_maxsize} if pool_maxsize else {}
        self._client = HTTPServiceClient(
            HTTPClientConfig(base_url=self.server_url, timeout=timeout, max_retries=max_retries, api_token=api_token,
                             **pool)
        )
        self._lock = threading.Lock()
        self._started = False
        self._server: LocalServer | None = None
        self._finalizer: weakref.finalize | None = None
        self._owner: Sandbox | None = None
        """The sandbox whose connection pool this one shares (see :meth:`as_worker`)."""

    def as_worker(self, worker_id: str) -> "Sandbox":
        """Another worker (its own sessions) on this sandbox's server and connection pool.

        It needs no health check of its own (it is started when this one is) and its
        :meth:`close_sync` leaves the pool and an auto-started server alone: closing
        this sandbox closes those. Many workers of one process thus share one pool of
        kept-alive connections instead of one pool (and one probe) each.
        """
        view = copy.copy(self)  # same settings and the same HTTPServiceClient
        view.worker_id = worker_id
        view.auto_start_server, view.config_path = False, None
        view._lock = threading.Lock()
        view._started = False
        view._server = None
        view._finalizer = None
        view._owner = self._owner or self
        return view

    # ------------------------------------------------------------------ lifecycle

    @property
    def client(self) -> HTTPServiceClient:
        """The underlying :class:`HTTPServiceClient`."""
        return self._client

    @property
    def is_started(self) -> bool:
        return self._started

    @property
    def server_process(self):
        """The ``subprocess.Popen`` of an auto-started server, else ``None``."""
        return self._server.proc if self._server else None

    @property
    def server_log_path(self) -> str | None:
        """The log file of an auto-started server, else ``None``."""
        return self._server.log_path if self._server else None

    def start_sync(self) -> "Sandbox":
        """Check that the server answers ``/health``; with ``auto_start_server``,
        start one if it does not. Idempotent.

        Returns:
            ``self``.

        Raises:
            SandboxConnectionError: no server answers and auto-start is off.
            SandboxServerStartError: the auto-started server failed to come up.
        """
        if self._owner is not None:  # a worker on another sandbox's pool: that one checks the server
            self._owner.start_sync()
            self._started = True
            return self
        with self._lock:
            if self._started:
                return self
            if not self._is_up():
                if not self.auto_start_server:
                    raise SandboxConnectionError(
                        f"no AgentFlow sandbox server answers at {self.server_url}/health; start one with "
                        f"`agentflow serve` or pass auto_start_server=True",
                        url=self.server_url + "/health",
                    )
                server = LocalServer(self.server_url, self.config_path, self._client.config.api_token)
                server.start(self._is_up, self.server_startup_timeout)
                self._server = server
                # Stop the server even if close() is never called.
                self._finalizer = weakref.finalize(self, server.stop)
            self._started = True
            return self

    def close_sync(self) -> None:
        """Stop an auto-started server and release connections. Idempotent; the
        Sandbox can be started again afterwards."""
        if self._owner is not None:  # the pool and any server belong to the owner
            self._started = False
            return
        with self._lock:
            self._started = False
            self._client.close()  # first: an idle keep-alive connection delays a graceful stop
            if self._finalizer is not None:
                self._finalizer()  # runs LocalServer.stop once
                self._finalizer = None
            self._server = None

    async def start(self) -> "Sandbox":
        """Async :meth:`start_sync`."""
        return await _in_thread(self.start_sync)

    async def close(self) -> None:
        """Async :meth:`close_sync`."""
        return await _in_thread(self.close_sync)

    def __enter__(self) -> "Sandbox":
        return self.start_sync()

    def __exit__(self, *exc_info: Any) -> None:
        self.close_sync()

    async def __aenter__(self) -> "Sandbox":
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def _is_up(self) -> bool:
        """One quick ``/health`` probe, without retries."""
        try:
            with requests.Session() as probe:
                probe.trust_env = self._client.config.trust_env
                resp = probe.get(self.server_url + "/health", timeout=min(2.0, self.timeout))
        except requests.RequestException:
            return False
        return resp.status_code == 200

    def _ensure_started(self) -> HTTPServiceClient:
        if not self._started:
            self.start_sync()
        return self._client

    # ------------------------------------------------------------------ sync API

    def execute_sync(
        self, action: str, params: dict | None = None, timeout: float | None = None, *, trace_id: str | None = None
    ) -> dict:
        """Run one tool as this worker.

        Args:
            action: Tool name (``bash:run``; aliases like ``bash-run`` work too).
            params: Tool parameters.
            timeout: Tool timeout in seconds (server default when omitted).
            trace_id: Correlates the call with a trajectory (one is made when omitted).

        Returns:
            The envelope ``{code, message, data, meta}``. ``code`` 2001 (the tool
            failed), 2002 (it timed out) and 2004 (interrupted: its server process
            died mid-run, outcome unknown) are results, not exceptions.

        Raises:
            SandboxRequestError: unknown tool (1001), bad parameters (1002), session
                error (1003), malformed request (1000).
            SandboxAuthError, SandboxConnectionError, SandboxServerError.
        """
        return self._ensure_started().execute(self.worker_id, action, params, timeout, trace_id)

    def execute_batch_sync(
        self, actions: list[dict], parallel: bool = False, stop_on_error: bool = True, *, trace_id: str | None = None
    ) -> dict:
        """Run several tools in one request (``[{"action", "params", "timeout"?}]``).
        ``data.results`` holds one envelope per executed action; the top ``code`` is
        the first failure's (a failed item is a result, never an exception)."""
        return self._ensure_started().execute_batch(self.worker_id, actions, parallel, stop_on_error, trace_id)

    def create_session_sync(self, resource: str, config: dict | None = None) -> dict:
        """Open this worker's session of ``resource`` (e.g. ``"bash"``). A session that
        already exists is success with ``data.created == False``. A ``custom_name``
        key in ``config`` names the session."""
        config = dict(config) if config else None
        custom_name = config.pop("custom_name", None) if config else None
        return self._ensure_started().create_session(self.worker_id, resource, config, custom_name)

    def destroy_session_sync(self, resource: str) -> dict:
        """End this worker's session of ``resource`` (its processes and workspace)."""
        return self._ensure_started().destroy_session(self.worker_id, resource)

    def list_sessions_sync(self) -> dict:
        """This worker's live sessions, in ``data.sessions``."""
        return self._ensure_started().list_sessions(self.worker_id)

    def refresh_session_sync(self, resource: str | None = None) -> dict:
        """Extend the TTL of this worker's session of ``resource`` (all when ``None``)."""
        return self._ensure_started().refresh_session(self.worker_id, resource)

    def warmup_sync(self, resources: str | list[str] | None = None) -> dict:
        """Load backends ahead of the first call (all when ``None``)."""
        return self._ensure_started().warmup(_as_list(resources))

    def get_warmup_status_sync(self) -> dict:
        """``data.backends = {name: {loaded, warmed_up, error?}}``."""
        return self._ensure_started().warmup_status()

    def list_tools_sync(self, include_hidden: bool = False, format: str | None = None) -> dict:
        """The server's tools in ``data.tools``; ``format="openai"`` gives the list for
        ``chat.completions.create(tools=...)``."""
        return self._ensure_started().list_tools(include_hidden, format)

    def get_status_sync(self) -> dict:
        """A summary of the server as seen by this worker.

        Returns:
            ``{"server_url", "worker_id", "started", "server_started_here",
            "health": {status, version}, "warmup": {backends...},
            "sessions": [...]}``.
        """
        client = self._ensure_started()
        return {
            "server_url": self.server_url,
            "worker_id": self.worker_id,
            "started": self._started,
            "server_started_here": self._server is not None,
            "health": client.health(),
            "warmup": client.warmup_status().get("data") or {},
            "sessions": (client.list_sessions(self.worker_id).get("data") or {}).get("sessions", []),
        }

    def shutdown_server_sync(self, force: bool = False, cleanup_sessions: bool = True) -> dict:
        """Ask the server to clean up and exit. An auto-started server is then waited
        for (and killed if it lingers). The Sandbox is no longer started afterwards."""
        result = self._ensure_started().shutdown(force, cleanup_sessions)
        with self._lock:
            self._started = False
            self._client.close()  # let the server's graceful stop skip our keep-alive connections
            server = self._server
            if server is not None and not server.wait(15):
                logger.warning("sandbox server did not exit after /shutdown; stopping it")
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._server = None
        return result

    # ------------------------------------------------------------------ async twins

    async def execute(
        self, action: str, params: dict | None = None, timeout: float | None = None, *, trace_id: str | None = None
    ) -> dict:
        """Async :meth:`execute_sync`."""
        return await _in_thread(self.execute_sync, action, params, timeout, trace_id=trace_id)

    async def execute_batch(
        self, actions: list[dict], parallel: bool = False, stop_on_error: bool = True, *, trace_id: str | None = None
    ) -> dict:
        """Async :meth:`execute_batch_sync`."""
        return await _in_thread(self.execute_batch_sync, actions, parallel, stop_on_error, trace_id=trace_id)

    async def create_session(self, resource: str, config: dict | None = None) -> dict:
        """Async :meth:`create_session_sync`."""
        return await _in_thread(self.create_session_sync, resource, config)

    async def destroy_session(self, resource: str) -> dict:
        """Async :meth:`destroy_session_sync`."""
        return await _in_thread(self.destroy_session_sync, resource)

    async def list_sessions(self) -> dict:
        """Async :meth:`list_sessions_sync`."""
        return await _in_thread(self.list_sessions_sync)

    async def refresh_session(self, resource: str | None = None) -> dict:
        """Async :meth:`refresh_session_sync`."""
        return await _in_thread(self.refresh_session_sync, resource)

    async def warmup(self, resources: str | list[str] | None = None) -> dict:
        """Async :meth:`warmup_sync`."""
        return await _in_thread(self.warmup_sync, resources)

    async def get_warmup_status(self) -> dict:
        """Async :meth:`get_warmup_status_sync`."""
        return await _in_thread(self.get_warmup_status_sync)

    async def list_tools(self, include_hidden: bool = False, format: str | None = None) -> dict:
        """Async :meth:`list_tools_sync`."""
        return await _in_thread(self.list_tools_sync, include_hidden, format)

    async def get_status(self) -> dict:
        """Async :meth:`get_status_sync`."""
        return await _in_thread(self.get_status_sync)

    async def shutdown_server(self, force: bool = False, cleanup_sessions: bool = True) -> dict:
        """Async :meth:`shutdown_server_sync`."""
        return await _in_thread(self.shutdown_server_sync, force, cleanup_sessions)

    def __repr__(self) -> str:
        state = "started" if self._started else "not started"
        return f"Sandbox(server_url={self.server_url!r}, worker_id={self.worker_id!r}, {state})"
