"""Wire-level tests of ``/api/v1``, the AgentFlow reference's protocol.

Requests are sent as the reference's client (``sandbox/client.py`` of the public
AgentFlow project) sends them: JSON bodies with exactly its fields (``timeout: null``
included), an ``X-Worker-ID`` header, ``include_hidden=False`` as Python writes it; the
assertions read the answers where its client, result formatter and rollout read them.
No code of the reference is used: :class:`RefClient` is ours, written from its protocol.
"""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.support.postgres import postgres_url  # noqa: F401 - a fixture (cluster tests)


class RefClient:
    """Our stand-in for the reference's HTTPServiceClient: its paths and bodies."""

    def __init__(self, server, worker_id: str | None = None):
        self.server = server
        self.worker_id = worker_id or f"worker_{uuid.uuid4().hex[:8]}"
        self.headers = {"Content-Type": "application/json", "X-Worker-ID": self.worker_id, **server.headers()}

    def post(self, path: str, body: dict | None, **kw) -> requests.Response:
        return requests.post(self.server.url + path, json=body, headers={**self.headers, **kw.pop("headers", {})},
                             timeout=kw.pop("timeout", 120), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.server.url + path, headers={**self.headers, **kw.pop("headers", {})},
                            timeout=kw.pop("timeout", 60), **kw)

    # the reference client's methods, one request each
    def execute(self, action: str, params: dict | None = None, timeout=None) -> requests.Response:
        return self.post("/api/v1/execute", {"worker_id": self.worker_id, "action": action, "params": params or {},
                                             "timeout": timeout})

    def execute_batch(self, actions: list[dict], parallel=False, stop_on_error=True) -> requests.Response:
        return self.post("/api/v1/execute/batch", {"worker_id": self.worker_id, "actions": actions,
                                                   "parallel": parallel, "stop_on_error": stop_on_error})

    def create_session(self, resource_type: str, session_config: dict | None = None, custom_name=None):
        return self.post("/api/v1/session/create", {"worker_id": self.worker_id, "resource_type": resource_type,
                                                    "session_config": session_config or {},
                                                    "custom_name": custom_name})

    def destroy_session(self, resource_type: str):
        return self.post("/api/v1/session/destroy", {"worker_id": self.worker_id, "resource_type": resource_type})

    def list_sessions(self) -> list[dict]:
        result = self.post("/api/v1/session/list", {"worker_id": self.worker_id}).json()
        data = result.get("data", {})
        return data.get("sessions", []) if isinstance(data, dict) else []

    def refresh_session(self, resource_type: str | None = None):
        body = {"worker_id": self.worker_id}
        if resource_type:
            body["resource_type"] = resource_type
        return self.post("/api/v1/session/refresh", body)

    def worker_call(self, path: str):  # heartbeat, status, worker/disconnect
        return self.post(path, {"worker_id": self.worker_id})


@pytest.fixture
def ref(server):
    """A reference-protocol client with its own worker id, on the shared server."""
    return RefClient(server)
