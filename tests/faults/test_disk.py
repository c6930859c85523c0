"""A full or read-only disk under the data dir at start: a clear message, exit code 2,
no traceback. Simulated with a tiny tmpfs (needs root and mount; skipped otherwise)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from tests.support.server import REPO, free_port


@contextlib.contextmanager
def tmpfs(path, options: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate the disk (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def serve(home):
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(free_port())],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AGENTFLOW_HOME": str(home)})


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_at_start_is_a_clear_error(tmp_path):
    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        (disk / "home").mkdir()
        with open(disk / "filler", "wb") as fh:  # take every free block
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        out = serve(disk / "home")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "disk is full" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_read_only_data_dir_at_start_is_a_clear_error(tmp_path):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as disk:
        out = serve(disk)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "not writable" in out.stderr or "Read-only file system" in out.stderr
    assert "Traceback" not in out.stderr
