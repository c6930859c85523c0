"""Server config files: ${VAR} expansion, unknown keys, clear start-up errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.config import ConfigError, expand_env, load_server_config
from tests.fixtures import file_id, reference_files
from tests.support.server import REPO, free_port


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_expansion_with_default_and_set_variable():
    env = {"A": "x"}
    assert expand_env({"k": "${A}/${B:-dflt}", "n": ["${A}"]}, env=env) == {"k": "x/dflt", "n": ["x"]}


def test_unset_variable_names_variable_and_key():
    with pytest.raises(ConfigError) as err:
        expand_env({"apis": {"web": {"serper_api_key": "${NO_SUCH_VAR_X}"}}}, env={})
    assert "NO_SUCH_VAR_X" in str(err.value) and "apis.web.serper_api_key" in str(err.value)


def test_empty_default_is_allowed():
    assert expand_env("${NOPE:-}", env={}) == ""


def test_invalid_json_names_line(tmp_path):
    with pytest.raises(ConfigError, match="line 2"):
        load_server_config(write(tmp_path, '{\n  "server": ,\n}'), env={})


def test_unknown_section_and_server_option(tmp_path):
    with pytest.raises(ConfigError, match="unknown section.*servr"):
        load_server_config(write(tmp_path, {"servr": {}}), env={})
    with pytest.raises(ConfigError, match="unknown option.*prot"):
        load_server_config(write(tmp_path, {"server": {"prot": 1}}), env={})


def test_bad_number(tmp_path):
    with pytest.raises(ConfigError, match="server.port must be a number"):
        load_server_config(write(tmp_path, {"server": {"port": "http"}}), env={})


def test_resources_and_apis_merge_with_aliases(tmp_path):
    cfg = load_server_config(write(tmp_path, {
        "resources": {"bash": {"enabled": True, "config": {"memory_mb": 512}}, "code": {"enabled": False}},
        "apis": {"websearch": {"content_limit": 10}},
        "warmup": {"enabled": True, "resources": ["bash"]},
    }), env={})
    assert cfg.resources == {"bash": {"memory_mb": 512}, "web": {"content_limit": 10}}
    assert cfg.warmup_enabled and cfg.warmup_resources == ["bash"]


def test_environment_overrides(tmp_path):
    cfg = load_server_config(write(tmp_path, {"server": {"auth_token": "file"}}),
                             env={"AGENTFLOW_API_TOKEN": "envtok", "AGENTFLOW_HOME": str(tmp_path / "h"),
                                  "AGENTFLOW_DATABASE_URL": "sqlite:////tmp/x.db"})
    assert cfg.auth_token == "envtok" and cfg.data_dir == (tmp_path / "h").resolve()
    assert cfg.effective_database_url == "sqlite:////tmp/x.db"


def serve(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(free_port()), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AGENTFLOW_HOME": str(tmp_path / "home"), **(env or {})})


def test_serve_refuses_unknown_resource(tmp_path):
    cfg = write(tmp_path, {"resources": {"warp_drive": {"enabled": True}}})
    out = serve(tmp_path, "--config", str(cfg))
    assert out.returncode == 2
    assert "warp_drive" in out.stderr and "known resources" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_unknown_backend_option(tmp_path):
    cfg = write(tmp_path, {"resources": {"bash": {"config": {"memroy_mb": 5}}}})
    out = serve(tmp_path, "--config", str(cfg))
    assert out.returncode == 2 and "memroy_mb" in out.stderr and "memory_mb" in out.stderr


def test_serve_reports_unset_variable(tmp_path):
    cfg = write(tmp_path, {"server": {"auth_token": "${AF_TEST_UNSET_TOKEN}"}})
    out = serve(tmp_path, "--config", str(cfg))
    assert out.returncode == 2 and "AF_TEST_UNSET_TOKEN" in out.stderr and "server.auth_token" in out.stderr


def test_serve_reports_unwritable_data_dir(tmp_path):
    # a path below a regular file cannot be created, for root as for anyone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = serve(tmp_path, env={"AGENTFLOW_HOME": str(blocker / "home")})
    assert out.returncode == 2 and "data directory" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("path", reference_files("configs/sandbox-server/*.json"), ids=file_id)
def test_reference_configs_load_or_fail_clearly(path):
    """AgentFlow's server configs (tests/fixtures/reference, and ../shared when present):
    each loads, or fails naming what is missing."""
    try:
        cfg = load_server_config(path, env={})
    except ConfigError as err:
        assert "${" not in str(err).split("uses")[0]
        assert "environment variable" in str(err) or "unknown" in str(err)
        return
    assert cfg.resources is not None
