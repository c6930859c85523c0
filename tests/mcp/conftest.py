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


def mcp_resource(paths: dict[str, str], repo: str | None = None, **extra) -> dict:
    """The ``mcp`` resource section: time (per session), stime (shared), everything (Node, with a
    secret) and, given a repository, git (read-only on it)."""
    servers_cfg = {
        "time": {"command": paths["time"], "args": ["--local-timezone", "UTC"]},
        "stime": {"command": paths["time"], "shared": True, "description": "one clock for every session"},
        "everything": {"command": paths["node"], "args": [paths["everything"], "stdio"],
                       "env": {"API_TOKEN": SECRET}, "cancel_grace": 1},
    }
    if repo:
        # the repository belongs to the test's user, not the session's: tell git it is safe
        servers_cfg["git"] = {"command": paths["git"], "args": ["--repository", repo], "read_only_paths": [repo],
                              "env": {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                                      "GIT_CONFIG_VALUE_0": "*"}}
    return {"config": {"servers": servers_cfg, **extra}}


def make_repo(path) -> str:
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "notes.txt").write_text("first line\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the first commit of the test repository"], check=True)
    return str(path)


@pytest.fixture(scope="module")
def mcp_server(mcp_paths, tmp_path_factory):
    """A sandbox server (2 workers) with bash, code and the mcp resource, behind a token."""
    repo = make_repo(tmp_path_factory.mktemp("repo") / "project")
    config = {"resources": {"bash": {}, "code": {}, "diag": {}, "mcp": mcp_resource(mcp_paths, repo)}}
    srv = start_server(tmp_path_factory.mktemp("mcp-server"), config=config, token=TOKEN, wait=120)
    srv.repo = repo
    yield srv
    srv.stop()
