"""AgentFlow installed from its wheel, outside the source checkout, works: it finds its
migrations and shipped data, serves, answers a tool call, and has its commands.

The wheel is built like a release (``python -m build``: an sdist, then the wheel from
the sdist, so MANIFEST.in is tested too) without build isolation (no downloads), and
installed with ``--no-deps`` into a fresh virtualenv in a temporary folder; that venv
sees the test venv's dependencies (flask, sqlalchemy, …) through a ``.pth`` file but not
its editable AgentFlow, so every ``agentflow`` import comes from the wheel.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.support.server import REPO, free_port

pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, a work folder outside the checkout, the wheel)."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.skip("the 'build' package is not installed (it is in the dev extra)")
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)], cwd=root)
    wheel = next(dist.glob("agentflow-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
          "--target", str(purelib), str(wheel)])
    # the console script: pip --target does not write bin/ of the venv, so write the entry point
    script = venv / "bin" / "agentflow"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom agentflow.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (purelib / "_agentflow_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = root / "elsewhere"
    work.mkdir()
    return venv / "bin", work, wheel


def test_wheel_carries_migrations_and_shipped_data(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("agentflow/_migrations/env.py", "agentflow/_migrations/script.py.mako",
                   "agentflow/_migrations/versions/0001_core.py", "agentflow/alembic.ini",
                   "agentflow/_data/configs/rollout/rag.json", "agentflow/_data/configs/synthesis/rag.json",
                   "agentflow/_data/benchmark/rag.jsonl", "agentflow/_data/seeds/rag/corpus.jsonl"):
        assert needed in names, f"{needed} is not in {wheel.name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_agentflow_imports_from_the_wheel(installed):
    bindir, work, _ = installed
    out = _run([str(bindir / "python"), "-c",
                "import agentflow, agentflow.config as c, agentflow.db.engine as e; "
                "print(agentflow.__file__); print(c.data_path()); print(e.migrations_dir())"], cwd=work).stdout.split()
    assert all(str(REPO) not in line for line in out), out
    assert out[1].endswith("agentflow/_data") and out[2].endswith("agentflow/_migrations")
    data = _run([str(bindir / "agentflow"), "data", "path"], cwd=work).stdout.strip()
    assert data == out[1]
    assert (Path(data) / "configs" / "rollout" / "rag.json").is_file()
    assert "--max-turns" in _run([str(bindir / "agentflow"), "demo", "--help"], cwd=work).stdout


def test_installed_server_migrates_serves_and_runs_a_tool(installed):
    bindir, work, _ = installed
    port, home = free_port(), work / "home"
    env = {**os.environ, "AGENTFLOW_HOME": str(home)}
    for key in ("AGENTFLOW_DATABASE_URL", "AGENTFLOW_CONFIG", "PYTHONPATH"):
        env.pop(key, None)
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([str(bindir / "agentflow"), "serve", "--port", str(port), "--workers", "1"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "serve.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (work / "serve.log").read_text()
            time.sleep(0.2)
        r = requests.post(f"http://127.0.0.1:{port}/execute", timeout=60,
                          json={"worker_id": "pkg", "action": "bash:run", "params": {"command": "echo ok"}}).json()
        assert r["code"] == 0 and r["data"]["stdout"] == "ok\n", r
    finally:
        proc.terminate()
        proc.wait(30)
    text = (work / "serve.log").read_text()
    assert "Running upgrade" not in text and "alembic" not in text, text  # quiet by default
    assert (home / "agentflow.db").is_file()
