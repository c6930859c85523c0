"""Bad ``mcp`` configs are refused at start, each with a message that says what and where."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentflow.config import load_server_config
from agentflow.runtime.registry import ToolRegistry
from agentflow.tools.base import BackendConfigError, BackendContext
from agentflow.tools.mcp.config import parse_config

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "configs" / "sandbox-server"


def _registry(tmp_path, mcp_config: dict) -> ToolRegistry:
    cfg = load_server_config(None)
    cfg.resources = {"mcp": mcp_config}
    return ToolRegistry(cfg, BackendContext(data_dir=tmp_path, roots=[], isolation="none"))


@pytest.mark.parametrize("config, words", [
    ({}, ["no MCP server is configured", "servers"]),
    ({"servers": {"a": {}}}, ["servers.a", "exactly one of 'command'", "'url'"]),
    ({"servers": {"a": {"command": "true", "url": "http://x/mcp"}}}, ["exactly one", "not both"]),
    ({"servers": {"a": {"command": "true", "argz": []}}}, ["servers.a", "unknown option", "argz", "did you mean 'args'"]),
    ({"servers": {"a.b": {"command": "true"}}}, ["server name 'a.b'", "mcp:<server>.<tool>"]),
    ({"servers": {"a": {"command": "no-such-program-here"}}}, ["'no-such-program-here' was not found on PATH"]),
    ({"servers": {"a": {"command": "true", "args": "x"}}}, ["args must be a list of strings"]),
    ({"servers": {"a": {"command": "true", "env": ["A=1"]}}}, ["env must be an object"]),
    ({"servers": {"a": {"url": "ftp://host/mcp"}}}, ["url must be an http:// or https:// URL"]),
    ({"servers": {"a": {"url": "http://h/mcp", "env": {}}}}, ["env apply to stdio servers"]),
    ({"servers": {"a": {"command": "true", "type": "sse"}}}, ["SSE transport is not supported"]),
    ({"servers": {"a": {"command": "true", "timeout": 0}}}, ["timeout must be a positive number"]),
    ({"servers": {"a": {"command": "true"}}, "sevrers": {}}, ["unknown option", "sevrers", "did you mean 'servers'"]),
    ({"servers": {"a": {"command": "true"}}, "mcpServers": {}}, ["not both"]),
    ({"enabled_mcp_servers": ["filesystem", "terminal"]}, ["'filesystem', 'terminal'", "Toolathlon image"]),
])
def test_bad_config_is_refused_with_a_clear_message(tmp_path, config, words):
    with pytest.raises(BackendConfigError) as err:
        _registry(tmp_path, config)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_server_that_exits_at_start_names_itself_and_quotes_its_stderr(tmp_path):
    script = tmp_path / "bad-server"
    script.write_text("#!/bin/sh\necho 'cannot open database: no such file' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(BackendConfigError) as err:
        _registry(tmp_path, {"servers": {"broken": {"command": str(script), "startup_timeout": 10}}})
    text = str(err.value)
    assert "MCP server 'broken'" in text and "cannot open database" in text, text


def test_a_program_that_is_not_an_mcp_server_times_out_its_handshake(tmp_path):
    with pytest.raises(BackendConfigError) as err:
        _registry(tmp_path, {"servers": {"sleepy": {"command": "sleep", "args": ["30"], "startup_timeout": 2}}})
    assert "MCP server 'sleepy'" in str(err.value) and "handshake within 2 s" in str(err.value), str(err.value)


def test_an_unreachable_url_server_is_refused_at_start(tmp_path):
    with pytest.raises(BackendConfigError) as err:
        _registry(tmp_path, {"servers": {"remote": {"url": "http://127.0.0.1:9/mcp", "startup_timeout": 5}}})
    assert "MCP server 'remote' (http" in str(err.value), str(err.value)


def test_the_reference_toolathlon_config_loads_and_is_refused_by_name(monkeypatch):
    path = REFERENCE / "mcp_config.json"
    if not path.exists():
        pytest.skip("no ../shared/reference/configs/sandbox-server/mcp_config.json beside the checkout")
    cfg = load_server_config(path, env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
    assert "mcp" in cfg.resources
    section = cfg.resources["mcp"]
    with pytest.raises(BackendConfigError) as err:
        parse_config(section)
    names = json.loads(path.read_text())["resources"]["mcp"]["config"]["enabled_mcp_servers"]
    assert all(repr(n) in str(err.value) for n in names) and "Toolathlon" in str(err.value)


def test_the_reference_keys_map_onto_servers_we_define(tmp_path):
    """enabled_mcp_servers picks defined servers; env_overrides reaches each stdio server."""
    spec = parse_config({"servers": {"a": {"command": "true"}, "b": {"command": "true", "env": {"X": "1"}}},
                         "enabled_mcp_servers": ["b"], "workspace_root": "/tmp/agentflow_mcp",
                         "env_overrides": {"PGHOST": "db", "X": "0"}})
    assert list(spec.servers) == ["b"]
    assert dict(spec.servers["b"].env) == {"PGHOST": "db", "X": "1"}


def test_ci_installs_the_mcp_test_servers_the_docs_list():
    repo = Path(__file__).resolve().parents[2]
    line = ".venv/bin/python tests/mcp/servers.py"
    assert line in (repo / ".ci" / "run").read_text()
    assert line in (repo / "docs" / "development.md").read_text()
