"""The bubblewrap command line: exactly what a session can see.

Inside a jail a session has: its workspace read-write (at the same path as on the
host, so paths in answers mean the same thing), the configured data roots and the
Python installation read-only, a read-only system (``/usr``, ``/etc`` and the top-level
links into ``/usr``), a private ``/tmp``, ``/dev/shm``, ``/proc`` of its own pid
namespace and a minimal ``/dev``. Everything else of the host — the server's data dir
(database, logs, caches, other workspaces), ``/root``, ``/home``, ``/run``, ``/sys``,
``/var`` — is simply not there. The user, ipc, pid, uts and cgroup namespaces are new;
the network namespace is new too, so the host's loopback (the server's port, local
databases) cannot be reached.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

__all__ = ["JailSpec", "bwrap_argv", "bwrap_path", "system_paths", "python_paths"]

_SYSTEM_DIRS = ("usr", "etc", "opt")
_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@dataclasses.dataclass
class JailSpec:
    workspace: Path
    read_only: list[Path]
    """Host folders visible read-only at the same path (data roots, Python)."""
    hidden: list[Path]
    """Host paths that must not be visible even where they lie under a read-only folder
    (the data dir, the workspace root, the server config file)."""
    workspace_size: int | None = None
    """Bytes: mount a tmpfs of this size as the workspace inside the jail (when the
    server could not mount one on the host); None binds the host folder."""
    info_fd: int | None = None
    """bwrap writes its first process's pid here (to attach the session's network)."""
    resolv_conf_fd: int | None = None
    """A descriptor whose contents replace ``/etc/resolv.conf`` in the jail."""
    hostname: str = "agentflow"


def system_paths() -> list[str]:
    """bwrap arguments for the read-only system: real folders are bound, the merged-usr
    links (``/bin -> usr/bin``) recreated as links."""
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}"):
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    for name in _TOP_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def python_paths() -> list[Path]:
    """The folders the supervisor's Python needs: the installation, the virtualenv, and
    this package when it is installed from a source checkout (``pip install -e``)."""
    import agentflow

    found: list[Path] = []
    for raw in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
                os.path.dirname(os.path.realpath(agentflow.__file__))):
        path = Path(os.path.realpath(raw))
        if not any(path == p or p in path.parents for p in found):
            found = [p for p in found if path not in p.parents] + [path]
    return [p for p in found if not str(p).startswith(("/usr/", "/etc/", "/opt/")) and p != Path("/usr")]


def _covered(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


_STAGE_CANDIDATES = ("/run", "/tmp", "/mnt", "/media", "/srv")

# A root launcher shows the jail's folders to bwrap through a staging folder, in a mount
# namespace of its own: bwrap runs as the session's uid, which may not be able to walk
# to the workspace (under a private data dir) or to the Python installation
# (``/root/.pyenv``). The launcher can, and bind-mounts exactly those folders — nothing
# above them — to ``<stage>/<n>`` on a fresh tmpfs, where the uid can reach them.
STAGE_SCRIPT = (
    'stage=$1; shift; mount -t tmpfs -o mode=0755,size=1m agentflow-stage "$stage" || exit 98; i=0; '
    'while [ "$1" != "--" ]; do i=$((i+1)); mkdir "$stage/$i" && mount --bind "$1" "$stage/$i" || exit 98; '
    'shift; done; shift; exec "$@"'
)


def stage_dir(sources: list[str]) -> str:
    """A world-enterable system folder that holds none of ``sources`` (mounting over it
    must not hide them)."""
    for candidate in _STAGE_CANDIDATES:
        if not os.path.isdir(candidate) or os.path.islink(candidate) or not os.stat(candidate).st_mode & 0o001:
            continue
        if not any(src == candidate or src.startswith(candidate + "/") for src in sources):
            return candidate
    raise OSError("no folder to stage the jail's mounts in (all of /run, /tmp, /mnt hold session folders)")


def bwrap_argv(spec: JailSpec, staged: bool = False) -> tuple[list[str], list[str]]:
    """``bwrap`` and its options, up to (not including) the command, and — with
    ``staged`` — the stage folder followed by the host folders the launcher must bind
    into it first, in order (see :data:`STAGE_SCRIPT`)."""
    bwrap = bwrap_path() or "bwrap"
    sources: list[str] = []
    marker = "\0stage\0"  # replaced by the stage folder once every source is known

    def bind(option: str, path: str) -> list[str]:
        if not staged:
            return [option, path, path]
        sources.append(path)
        return [option, f"{marker}/{len(sources)}", path]

    # No --die-with-parent: the jail is started detached (its parent exits at once) and
    # ends through its cgroup when the session ends.
    # --disable-userns: session code cannot make user namespaces of its own (a large
    # share of kernel attack surface that nothing a session runs needs).
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session", "--hostname", spec.hostname]
    if spec.info_fd is not None:
        args += ["--info-fd", str(spec.info_fd)]
    args += system_paths()
    # The private folders first: a data root or workspace under /tmp is bound on top.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm", "--tmpfs", "/run"]
    ro: list[Path] = []
    for path in spec.read_only:
        real = Path(os.path.realpath(path))
        if real.is_dir() and real not in ro:
            ro.append(real)
            args += bind("--ro-bind", str(real))
    visible = [Path(f"/{d}") for d in _SYSTEM_DIRS] + ro
    for path in spec.hidden:  # e.g. a data dir inside the project folder that is bound for its code
        real = Path(os.path.realpath(path))
        if _covered(real, visible):
            args += ["--tmpfs", str(real)] if real.is_dir() else ["--ro-bind", "/dev/null", str(real)]
    if spec.resolv_conf_fd is not None:
        # where the host's link points, if it is one (e.g. into /run, a tmpfs in the jail)
        args += ["--ro-bind-data", str(spec.resolv_conf_fd), os.path.realpath("/etc/resolv.conf")]
    workspace = str(spec.workspace)
    if spec.workspace_size:
        args += ["--size", str(spec.workspace_size), "--perms", "0700", "--tmpfs", workspace]
    else:
        args += bind("--bind", workspace)
    args += ["--chdir", workspace]
    if not staged:
        return args, []
    stage = stage_dir(sources)
    return [a.replace(marker, stage) for a in args], [stage, *sources]
