"""The data dir is the server's alone: 0700, the database (and its -wal/-shm) and logs
0600 — created so, and tightened at start when an older version left them looser.

Issue 12: with the data dir 0755 and the database 0644, a bash session read every
other worker's audited params and results."""
from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def private_files(home: Path) -> list[Path]:
    return [p for p in (home / "agentflow.db", home / "agentflow.db-wal", home / "agentflow.db-shm",
                        home / "server.log", home / ".migrate.lock") if p.exists()]


def exercise(srv) -> str:
    """Write something to the database that another worker must not read."""
    secret = f"TOPSECRET-{uuid.uuid4().hex}"
    out = srv.post("/execute", {"worker_id": f"v_{uuid.uuid4().hex[:6]}", "action": "diag:echo",
                                "params": {"value": secret}}).json()
    assert out["code"] == 0
    return secret


def assert_private(home: Path) -> None:
    assert mode(home) == 0o700, oct(mode(home))
    files = private_files(home)
    names = {p.name for p in files}
    assert {"agentflow.db", "agentflow.db-wal", "agentflow.db-shm", "server.log"} <= names, names
    for path in files:
        assert mode(path) & 0o077 == 0, (path.name, oct(mode(path)))


def test_new_data_dir_is_private(server_factory):
    srv = server_factory({"resources": {"diag": {}, "bash": {}}})
    exercise(srv)
    assert_private(srv.home)


def test_looser_leftovers_are_tightened_at_start(server_factory, tmp_path):
    srv = server_factory({"resources": {"diag": {}}})
    exercise(srv)
    srv.stop()
    os.chmod(srv.home, 0o755)
    for path in private_files(srv.home):
        os.chmod(path, 0o644)
    Path(srv.home, "old.log").write_text("x")
    os.chmod(srv.home / "old.log", 0o644)
    from tests.support.server import start_server

    restarted = start_server(srv.home, config={"resources": {"diag": {}}})
    try:
        exercise(restarted)
        assert_private(srv.home)
        assert mode(srv.home / "old.log") == 0o600
    finally:
        restarted.stop()


def test_database_file_is_created_0600_whatever_the_umask(tmp_path):
    from agentflow.db import make_engine, upgrade

    old = os.umask(0o000)
    try:
        url = f"sqlite:///{tmp_path / 'x.db'}"
        upgrade(url, lock_dir=tmp_path)
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("select count(*) from tool_calls")
        for name in ("x.db", "x.db-wal", "x.db-shm", ".migrate.lock"):
            if (tmp_path / name).exists():
                assert mode(tmp_path / name) == 0o600, (name, oct(mode(tmp_path / name)))
        engine.dispose()
    finally:
        os.umask(old)


def test_symlinked_database_side_file_is_not_followed(tmp_path):
    """Tightening must not chmod a symlink's target (a chmod follows links)."""
    from agentflow.db.engine import private_sqlite_files

    target = tmp_path / "elsewhere"
    target.write_text("x")
    os.chmod(target, 0o644)
    os.symlink(target, tmp_path / "x.db-wal")
    private_sqlite_files(tmp_path / "x.db")
    assert mode(target) == 0o644 and mode(tmp_path / "x.db") == 0o600


def _other_user() -> str | None:
    for name in ("nobody", "daemon"):
        if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
            return name
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_read_the_database(server_factory):
    srv = server_factory({"resources": {"diag": {}}})
    secret = exercise(srv)
    user = _other_user()
    if user is None:
        pytest.skip("no unprivileged user on this machine")
    for name in ("agentflow.db", "agentflow.db-wal", "server.log"):
        out = subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--clear-groups", "cat",
                              str(srv.home / name)], capture_output=True)
        assert out.returncode != 0 and secret.encode() not in out.stdout, name


def test_a_bash_session_cannot_read_the_database(server_factory):
    """The attack itself: session code looks for the server's database."""
    if os.geteuid() != 0 and os.environ.get("AGENTFLOW_ISOLATION") == "none":
        pytest.skip("a non-root server without isolation runs commands as itself")
    srv = server_factory({"resources": {"diag": {}, "bash": {}}})
    secret = exercise(srv)
    home = srv.home
    command = (f"cat {home}/agentflow.db {home}/agentflow.db-wal {home}/server.log 2>/dev/null | "
               f"grep -c TOPSECRET; ls {home} 2>&1 | head -5")
    out = srv.post("/execute", {"worker_id": f"a_{uuid.uuid4().hex[:6]}", "action": "bash:run",
                                "params": {"command": command}}).json()
    assert out["code"] == 0, out
    assert secret not in out["data"]["stdout"] and out["data"]["stdout"].startswith("0\n"), out["data"]
