"""Shared fixtures: a real server under gunicorn on a free port, with its own data dir.

A test run leaves nothing in the temp dir: everything the tests, their servers and
helpers create with ``tempfile`` goes into one folder of this run (``TMPDIR``), removed
when the run ends, together with any workspace mount a killed server left behind.
pytest's own ``tmp_path`` folders stay where pytest keeps them (only failed tests' are
kept, see ``tmp_path_retention_policy`` in pyproject.toml).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.server import start_server

_RUN_TMP: Path | None = None


def pytest_configure(config):
    global _RUN_TMP
    # The model-call cache is shared by every run of a database (by design), and the
    # tests' runs share their server's database while their scripted models differ:
    # runs leave it off unless a test sets ``cache`` (tests/rollout/test_model_cache.py).
    os.environ.setdefault("AGENTFLOW_MODEL_CACHE", "off")
    if os.environ.get("AGENTFLOW_TEST_TMPDIR"):  # a nested pytest (e.g. a test running pytest): share it
        return
    system_tmp = tempfile.gettempdir()
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system_tmp)  # pytest's tmp_path stays in the system temp dir
    _RUN_TMP = Path(tempfile.mkdtemp(prefix="aft-", dir=system_tmp))
    _RUN_TMP.chmod(0o1777)  # like /tmp: helpers make folders there for a non-root server user too
    os.environ["TMPDIR"] = os.environ["AGENTFLOW_TEST_TMPDIR"] = str(_RUN_TMP)
    tempfile.tempdir = str(_RUN_TMP)


def unmount_under(*folders: Path) -> list[str]:
    """Lazily unmount every mount point below ``folders`` (a SIGKILLed server's session
    workspaces); returns them. Needs root; else returns what is mounted."""
    prefixes = [str(Path(f).resolve()).rstrip("/") + "/" for f in folders]
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    found = [p for p in points if any(p.startswith(pre) for pre in prefixes)]
    if os.geteuid() == 0:
        for point in sorted(found, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
    return found


def pytest_unconfigure(config):
    global _RUN_TMP
    if _RUN_TMP is None:
        return
    run_tmp, _RUN_TMP = _RUN_TMP, None
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    unmount_under(run_tmp, *([basetemp] if basetemp else []))
    shutil.rmtree(run_tmp, ignore_errors=True)
    tempfile.tempdir = None


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
    unmount_under(tmp_path)  # a killed server's workspace mounts
