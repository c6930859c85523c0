"""Fixtures: the real MCP servers (installed from PyPI and npm, see servers.py) and one
sandbox server under gunicorn whose ``mcp`` resource runs them."""
from __future__ import annotations

import pytest

from tests.mcp import servers
from tests.support.server import start_server

SECRET = "s3cr3t-value-for-tests"
TOKEN = "mcp-test-token"


@pytest.fixture(scope="session")
def mcp_paths() -> dict[str, str]:
    try:
        return servers.ensure()
    except servers.Unavailable as err:
        pytest.skip(f"the real MCP servers could not be installed from their registries: {err}")


def mcp_resource(paths: dict[str, str], **extra) -> dict:
    """The ``mcp`` resource section: time (per session), stime (shared), everything (Node, with a secret)."""
    servers_cfg = {
        "time": {"command": paths["time"], "args": ["--local-timezone", "UTC"]},
        "stime": {"command": paths["time"], "shared": True, "description": "one clock for every session"},
        "everything": {"command": paths["node"], "args": [paths["everything"], "stdio"],
                       "env": {"API_TOKEN": SECRET}, "cancel_grace": 1},
    }
    return {"config": {"servers": servers_cfg, **extra}}


@pytest.fixture(scope="module")
def mcp_server(mcp_paths, tmp_path_factory):
    """A sandbox server (2 workers) with bash, code and the mcp resource, behind a token."""
    config = {"resources": {"bash": {}, "code": {}, "diag": {}, "mcp": mcp_resource(mcp_paths)}}
    srv = start_server(tmp_path_factory.mktemp("mcp-server"), config=config, token=TOKEN, wait=120)
    yield srv
    srv.stop()
