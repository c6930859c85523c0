"""Running the real server as an ordinary user, from a root test run.

What an operator does for a non-root server: a user of its own, a data dir that user
owns, and the session cgroup folder delegated to it (README, "Running as a non-root
user"). One thing is particular to test machines: when Python lives under a folder
other users cannot enter (pyenv in ``/root``), the server is started in a mount
namespace of its own where only that installation is made reachable — the user still
cannot read anything else of ``/root``.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

USER = "agentflow-test"
_CGROUP = Path("/sys/fs/cgroup")


def available() -> str | None:
    """None when a non-root server can be run here, else why not."""
    if os.geteuid() != 0:
        return "needs a root test run (to create the user and delegate cgroups)"
    for tool in ("useradd", "unshare", "setpriv", "bwrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def make_home(user: pwd.struct_passwd) -> Path:
    home = Path(tempfile.mkdtemp(prefix="af-nonroot-"))
    os.chown(home, user.pw_uid, user.pw_gid)
    os.chmod(home, 0o700)
    return home


def delegate_cgroups(user: pwd.struct_passwd, name: str) -> None:
    """What the README tells an operator: a cgroup folder per controller, owned by the
    server's user (v1 ``memory`` and ``pids``, or one folder on v2)."""
    folders = [_CGROUP / name] if (_CGROUP / "cgroup.controllers").exists() else \
        [_CGROUP / c / name for c in ("memory", "pids")]
    for folder in folders:
        folder.mkdir(exist_ok=True)
        for path in [folder, *folder.iterdir()]:
            if path.is_file() and path.name not in ("cgroup.procs", "cgroup.subtree_control", "tasks"):
                continue
            os.chown(path, user.pw_uid, user.pw_gid)


def remove_cgroups(name: str) -> None:
    for folder in [_CGROUP / name, *(_CGROUP / c / name for c in ("memory", "pids"))]:
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir():
                    child.rmdir()
            folder.rmdir()


def _closed_ancestor(path: str) -> Path | None:
    """The highest folder above ``path`` that other users cannot enter."""
    closed = None
    for parent in reversed(Path(path).parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            closed = parent
            break
    return closed


def prefix(user: pwd.struct_passwd) -> list[str]:
    """The command prefix that runs the server as ``user``."""
    drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all",
            "--"]
    install = os.path.realpath(sys.base_prefix)
    closed = _closed_ancestor(install)
    if closed is None:
        return drop
    inner = os.path.relpath(install, closed)
    script = (f'mkdir -p /mnt/af-closed && mount --bind "{closed}" /mnt/af-closed && '
              f'mount -t tmpfs -o mode=0755 af-open "{closed}" && mkdir -p "{closed}/{inner}" && '
              f'mount --bind "/mnt/af-closed/{inner}" "{closed}/{inner}" && umount -l /mnt/af-closed && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", *drop]
