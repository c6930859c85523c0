"""Shared fixtures: a real server under gunicorn on a free port, with its own data dir."""
from __future__ import annotations

import pytest

from tests.support.server import start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server with the default config (2 workers), shared by read-mostly tests.
    Tests that use it pick their own unique ``worker_id``."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path):
    """Start extra servers with a given config; all are stopped after the test."""
    started = []

    def make(config=None, **kw):
        srv = start_server(tmp_path / f"srv{len(started)}", config=config, **kw)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
