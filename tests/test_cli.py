"""What a new user meets at the command line (issue 16): quiet output, one-line start-up
errors, one vocabulary of flags, "did you mean", shipped data found from anywhere, and
nothing left in the temp dir."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agentflow.cli import build_parser, main
from agentflow.config import ConfigError, data_path, load_server_config, read_config
from tests.support.server import REPO, start_server


def agentflow(*args, cwd=None, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("AGENTFLOW_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=full_env, timeout=timeout)


# -- item 7: a busy port is one line, before anything touches a database -------------------
@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", [["serve"], ["model", "serve"]])
def test_busy_port_is_one_line_naming_the_port_before_the_database(tmp_path, busy_port, command):
    home = tmp_path / "home"
    r = agentflow(*command, "--port", str(busy_port), env={"AGENTFLOW_HOME": str(home),
                                                           "AGENTFLOW_DATABASE_URL": f"sqlite:///{home}/x.db"})
    assert r.returncode == 2, r
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"port {busy_port}" in lines[0] and "--port" in lines[0] and "in use" in lines[0]
    assert not home.exists()  # no data dir, no database, no migration


# -- item 6: quiet by default, -v for more --------------------------------------------------
def test_commands_are_quiet_by_default_and_verbose_with_v(tmp_path):
    env = {"AGENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/runs.db", "AGENTFLOW_HOME": str(tmp_path)}
    quiet = agentflow("runs", "list", env=env)
    assert quiet.returncode == 0, quiet
    assert "alembic" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    for argv in (["-v", "runs", "list"], ["runs", "list", "-v"]):  # -v before or after the subcommand
        loud = agentflow(*argv, env={**env, "AGENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/{len(argv[0])}.db"})
        assert loud.returncode == 0, loud
        assert "alembic" in loud.stderr, loud.stderr


def test_log_lines_go_through_the_progress_bars(capsys):
    import logging

    from agentflow.cli import _ProgressSafeHandler, setup_logging

    setup_logging(0)
    try:
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, _ProgressSafeHandler)]
        assert len(handlers) == 1
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("alembic").getEffectiveLevel() == logging.WARNING
        setup_logging(1)  # twice: still one handler
        assert len([h for h in logging.getLogger().handlers if isinstance(h, _ProgressSafeHandler)]) == 1
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.INFO
    finally:
        for h in list(logging.getLogger().handlers):
            if isinstance(h, _ProgressSafeHandler):
                logging.getLogger().removeHandler(h)
        for name in ("httpx", "alembic", "agentflow"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_startup_warning_printed_once(tmp_path):
    srv = start_server(tmp_path / "srv", env={"AGENTFLOW_ISOLATION": "none"}, workers=2)
    try:
        assert srv.post("/execute", {"worker_id": "w", "action": "bash:run",
                                     "params": {"command": "echo ok"}}).json()["code"] == 0
    finally:
        srv.stop()
    log = srv.log_text()
    assert log.count("unconfined") == 1, log
    assert "alembic" not in log, log


# -- item 8: one vocabulary of flags, old spellings kept -----------------------------------
SHARED = {
    "demo": {"--model": "model", "--base-url": "base_url", "--api-key": "api_key", "--tasks": "tasks",
             "--seeds": "seeds", "--max-turns": "max_turns", "--workers": "workers"},
    "rollout": {"--model": "model_name", "--base-url": "base_url", "--api-key": "api_key",
                "--tasks": "number_of_tasks", "--max-turns": "max_turns", "--workers": "max_workers"},
    "synthesize": {"--model": "model_name", "--base-url": "base_url", "--api-key": "api_key",
                   "--seeds": "number_of_seed", "--workers": "max_workers"},
}
ALIASES = {"demo": {"--model-name": "--model", "--number-of-tasks": "--tasks", "--number-of-seed": "--seeds",
                    "--max-workers": "--workers"},
           "rollout": {"--model-name": "--model", "--number-of-tasks": "--tasks", "--max-workers": "--workers"},
           "synthesize": {"--model-name": "--model", "--number-of-seed": "--seeds", "--max-workers": "--workers"}}


def _value(flag: str) -> str:
    return "http://x/v1" if flag == "--base-url" else "3" if flag in (
        "--tasks", "--seeds", "--max-turns", "--workers", "--number-of-tasks", "--number-of-seed",
        "--max-workers") else "m"


@pytest.mark.parametrize("command", sorted(SHARED))
def test_shared_flags_and_their_old_spellings(command):
    parser = build_parser()
    for flag, dest in SHARED[command].items():
        args = parser.parse_args([command, flag, _value(flag)])
        expected = int(_value(flag)) if _value(flag).isdigit() else _value(flag)
        assert getattr(args, dest) == expected, (command, flag)
    for old, new in ALIASES[command].items():
        a = parser.parse_args([command, old, _value(old)])
        b = parser.parse_args([command, new, _value(new)])
        assert vars(a) == vars(b), (command, old)


def test_synthesize_seeds_takes_a_count_or_a_file():
    parser = build_parser()
    assert parser.parse_args(["synthesize", "--seeds", "4"]).number_of_seed == 4
    args = parser.parse_args(["synthesize", "--seeds", "seeds/rag/seeds.jsonl"])
    assert args.seeds == "seeds/rag/seeds.jsonl" and args.number_of_seed is None
    assert parser.parse_args(["synthesize", "--seeds-file", "s.jsonl"]).seeds == "s.jsonl"


def test_unknown_flag_and_command_say_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rollout", "--modle", "x"])
    assert exc.value.code == 2
    assert "did you mean '--model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rollot"])
    assert "did you mean 'rollout'" in capsys.readouterr().err


def test_set_typo_blames_the_flag_not_the_config_file(tmp_path):
    from agentflow.rollout.config import load_config

    cfg = REPO / "configs" / "rollout" / "rag.json"
    with pytest.raises(ConfigError) as err:
        load_config(cfg, max_turn=3)
    text = str(err.value)
    assert "--set" in text and "did you mean 'max_turns'" in text and str(cfg) not in text
    r = agentflow("rollout", "--config", str(cfg), "--set", "max_turn=3", env={"AGENTFLOW_HOME": str(tmp_path)})
    assert r.returncode == 2 and "--set" in r.stderr and "max_turns" in r.stderr and str(cfg) not in r.stderr, r
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"max_turn": 3}))
    with pytest.raises(ConfigError, match=f"{bad}: unknown .*did you mean 'max_turns'"):
        read_config(bad, {}, {"max_turns"}, "rollout config")


def test_server_config_unknown_keys_say_did_you_mean(tmp_path):
    path = tmp_path / "server.json"
    for body, hint in (({"server": {"prot": 1}}, "did you mean 'port'"),
                       ({"servr": {}}, "did you mean 'server'"),
                       ({"resources": {"bash": {"confg": {}}}}, "did you mean 'config'")):
        path.write_text(json.dumps(body))
        with pytest.raises(ConfigError, match=hint):
            load_server_config(path, env={})


# -- item 5: the shipped data is found through one function ---------------------------------
def test_data_path_command_prints_the_shipped_data(tmp_path):
    assert data_path() == REPO  # a source checkout
    r = agentflow("data", "path", cwd=tmp_path)
    assert r.returncode == 0 and Path(r.stdout.strip()) == data_path()
    r = agentflow("data", "path", "configs", cwd=tmp_path)
    assert (Path(r.stdout.strip()) / "rollout" / "rag.json").is_file()


# -- item 11: a server leaves nothing in the temp dir ---------------------------------------
def _server_temp_leftovers(tmp_path) -> tuple[list[str], list[str]]:
    tmpdir = Path(tempfile.mkdtemp(prefix="t-"))  # short: the control folder holds unix sockets
    # A data dir long enough that the control folder goes to the temp dir (see
    # agentflow.isolation.session.control_dir), short enough for the sessions' sockets.
    base = Path(tempfile.mkdtemp(prefix="h-"))
    home = base / ("h" * max(1, 60 - len(str(base)) - 1))
    srv = start_server(home, env={"TMPDIR": str(tmpdir)}, workers=1)
    try:
        for action, params in (("bash:run", {"command": "echo ok"}), ("code:run", {"code": "print(1)"})):
            out = srv.post("/execute", {"worker_id": "w", "action": action, "params": params}).json()
            assert out["code"] == 0, out
        srv.post("/session/destroy", {"worker_id": "w"})
    finally:
        srv.stop()
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(tmp_path) in line or str(base) in line]
    shutil.rmtree(base, ignore_errors=True)
    left = sorted(p.name for p in tmpdir.iterdir())
    shutil.rmtree(tmpdir, ignore_errors=True)
    return left, mounts


def test_server_leaves_no_temp_files_or_mounts(tmp_path):
    left, mounts = _server_temp_leftovers(tmp_path)
    assert not mounts
    assert [n for n in left if not n.startswith("agentflow-control-")] == []


def test_server_removes_its_control_folder_from_the_temp_dir(tmp_path):
    left, _ = _server_temp_leftovers(tmp_path)
    assert left == []


def test_test_run_uses_a_temp_dir_of_its_own():
    """conftest.py points TMPDIR at a folder of this run, removed when the run ends."""
    assert os.environ.get("AGENTFLOW_TEST_TMPDIR")
    assert tempfile.gettempdir() == os.environ["AGENTFLOW_TEST_TMPDIR"] == os.environ["TMPDIR"]
    assert Path(tempfile.gettempdir()).name.startswith("aft-")
