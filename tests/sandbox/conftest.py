"""Fixtures for client tests: a Sandbox on the shared server, and a way to call any
Sandbox method in its sync or async form."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from agentflow.sandbox import Sandbox


@pytest.fixture
def worker_id() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sandbox(server, worker_id):
    with Sandbox(server_url=server.url, worker_id=worker_id, timeout=30) as sb:
        yield sb


@pytest.fixture(params=["sync", "async"])
def call(request):
    """``call(sandbox, "execute", *args)`` runs ``execute_sync`` or ``await execute``."""
    mode = request.param

    def run(sb: Sandbox, name: str, *args, **kwargs):
        if mode == "sync":
            return getattr(sb, f"{name}_sync")(*args, **kwargs)
        return asyncio.run(getattr(sb, name)(*args, **kwargs))

    run.mode = mode
    return run
