"""The real MCP servers the tests drive, installed from their registries.

- ``mcp-server-time`` and ``mcp-server-git`` (PyPI) into a virtualenv of their own (they
  pin their own ``mcp``);
- ``@modelcontextprotocol/server-everything`` (npm) into a folder of its own.

Both go to ``$AGENTFLOW_MCP_TEST_SERVERS`` (default ``~/.cache/agentflow/mcp-test-servers``),
keyed by the pinned versions, so CI installs them once (``.ci/run`` runs this file) and
later runs reuse them. ``python tests/mcp/servers.py`` installs them and prints where.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

PYPI = ["mcp-server-time==2026.10.19", "mcp-server-git==2026.10.19"]
NPM = ["@modelcontextprotocol/server-everything@2026.8.31"]
_KEY = "v1-" + "-".join(p.split("==")[1] for p in PYPI[:1]) + "-" + NPM[0].rsplit("@", 1)[1]


class Unavailable(Exception):
    """A registry, npm or node is missing here; the message says which."""


def root() -> Path:
    base = os.environ.get("AGENTFLOW_MCP_TEST_SERVERS") or str(Path.home() / ".cache" / "agentflow"
                                                                / "mcp-test-servers")
    return Path(base) / _KEY


def _run(cmd: list[str], what: str) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Unavailable(f"{what}: {err}") from None
    if out.returncode != 0:
        raise Unavailable(f"{what} failed ({out.returncode}): {(out.stderr or out.stdout)[-800:]}")


def ensure() -> dict[str, str]:
    """Install (once) and return the servers' paths: ``time``, ``git`` (programs) and
    ``everything`` (the Node entry script), plus ``node``.

    Raises:
        Unavailable: they cannot be installed here.
    """
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    venv, npm_dir = base / "pyservers", base / "npm"
    paths = {"time": str(venv / "bin" / "mcp-server-time"), "git": str(venv / "bin" / "mcp-server-git"),
             "everything": str(npm_dir / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist"
                               / "index.js"), "node": shutil.which("node") or ""}
    with open(base / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".done").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], "creating a virtualenv for the PyPI MCP servers")
            _run([str(venv / "bin" / "pip"), "install", "-q", *PYPI], f"pip install {' '.join(PYPI)}")
            (venv / ".done").touch()
        if not (npm_dir / ".done").exists():
            if not shutil.which("npm") or not paths["node"]:
                raise Unavailable("node and npm are not installed (Debian: apt-get install nodejs npm)")
            shutil.rmtree(npm_dir, ignore_errors=True)
            _run(["npm", "install", "--prefix", str(npm_dir), "--no-audit", "--no-fund", "--loglevel=error", *NPM],
                 f"npm install {' '.join(NPM)}")
            (npm_dir / ".done").touch()
    missing = [k for k, v in paths.items() if not v or not Path(v).exists()]
    if missing:
        raise Unavailable(f"installed, but {', '.join(missing)} is missing under {base}")
    return paths


if __name__ == "__main__":
    try:
        print("\n".join(f"{k}: {v}" for k, v in ensure().items()))
    except Unavailable as err:
        sys.exit(f"MCP test servers unavailable: {err}")
