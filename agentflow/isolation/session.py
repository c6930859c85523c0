"""Start, reach and end a confined session.

:class:`Confinement` is made once per backend (at server start, where it refuses to
build when the machine cannot confine); :meth:`Confinement.start` gives a session its
jail and supervisor, recording in ``session.state["jail"]`` what any server process
needs to reach and end it. Ending a session kills everything in its cgroup, unmounts
its workspace and gives its uid back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..processes import owner_alive, owner_id
from . import channel, network
from .cgroups import CgroupTree, detect_cgroups
from .errors import IsolationError, IsolationUnavailable, SupervisorError
from .identity import allocate_uid, release_uid
from .jail import STAGE_SCRIPT, JailSpec, bwrap_argv, bwrap_path, python_paths
from .policy import IsolationMode, Limits

log = logging.getLogger(__name__)

__all__ = ["ConfinedSession", "Confinement", "JailRecord", "sweep"]

_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
_SETSID = shutil.which("setsid") or "/usr/bin/setsid"
_UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
_GRACE = 5.0  # seconds a supervisor gets beyond the call's own timeout to answer
_SUPERVISOR = "from agentflow.isolation.supervisor import main; main()"
# The launcher: report its pid, join the session cgroups, then become the jail.
_LAUNCH = ('echo $$; for f in $AF_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; '
           'unset AF_CGROUP_PROCS; exec "$@" </dev/null >/dev/null')
_probe_lock = threading.Lock()
_probed: dict[str, str | None] = {}


@dataclasses.dataclass
class JailRecord:
    """What ``session.state["jail"]`` holds (JSON-safe)."""

    socket: str
    key: str
    pid: int
    uid: int | None
    mounted: bool
    mode: str
    holder: str | None = None
    """The id the uid slot was allocated under, when it is not the session's own (a
    session that adopted a pooled jail, see :mod:`.pool`)."""

    @classmethod
    def from_state(cls, state: dict | None) -> "JailRecord | None":
        try:
            return cls(**state) if state else None
        except TypeError:
            return None


def session_key(session_id: str) -> str:
    """The name of a session's cgroup and control files, derived from its id alone so
    that a cleaner can end a session whose state was never saved."""
    return "s" + hashlib.sha256(session_id.encode()).hexdigest()[:20]


class ConfinedSession:
    """A live session's supervisor, reachable from any server process on the node."""

    def __init__(self, record: JailRecord, max_reply_bytes: int):
        self.record = record
        self.max_reply_bytes = max_reply_bytes

    def request(self, op: str, wait: float, **payload: Any) -> dict:
        """The supervisor's answer to one operation.

        Raises:
            SupervisorTimeout: no answer within ``wait`` seconds plus a short grace.
            SupervisorError: the supervisor is gone or failed the operation.
        """
        reply = channel.request(self.record.socket, {"op": op, **payload}, wait + _GRACE, self.max_reply_bytes)
        if not reply.get("ok"):
            raise SupervisorError(str(reply.get("error") or "the session supervisor refused the call")[:2000])
        return reply


class Confinement:
    """The confinement one backend's sessions get."""

    def __init__(self, resource: str, limits: Limits, mode: IsolationMode, *, hidden: list[Path],
                 read_only: list[Path], cgroup_parent: str = "agentflow"):
        self.resource = resource
        self.limits = limits
        self.mode = mode
        self.hidden = list(hidden)
        self.read_only = list(read_only)
        self.cgroups: CgroupTree | None = None
        if mode is IsolationMode.BWRAP:
            _require_bwrap(resource)
            self.cgroups = detect_cgroups(cgroup_parent)
            if limits.network == "full":
                network.require_slirp(resource)

    @property
    def confined(self) -> bool:
        return self.mode is IsolationMode.BWRAP

    def describe(self) -> dict:
        return {"isolation": self.mode.value, "network": self.limits.network, "memory_mb": self.limits.memory_mb,
                "max_processes": self.limits.max_processes, "disk_mb": self.limits.disk_mb,
                "file_size_mb": self.limits.file_size_mb,
                "cgroups": f"v{self.cgroups.version}" if self.cgroups else None}

    # -- start -------------------------------------------------------------------
    def start(self, session, env: dict[str, str], kernel: dict | None = None,
              startup_timeout: float = 30.0) -> ConfinedSession:
        """Give ``session`` its jail and supervisor, configured with ``env``.

        Raises:
            IsolationError: the jail or its supervisor did not come up.
        """
        key = session_key(session.session_id)
        control = control_dir(Path(session.workspace).parent)
        sock_path = str(control / f"{key}.sock")
        root = os.geteuid() == 0
        uid = allocate_uid(control / "uids", session.session_id) if self.confined and root else None
        record = JailRecord(sock_path, key, 0, uid, False, self.mode.value)
        session.state["jail"] = dataclasses.asdict(record)
        try:
            record.mounted = self.confined and root and _mount_workspace(Path(session.workspace), uid,
                                                                       self.limits.disk_mb << 20)
            session.state["jail"] = dataclasses.asdict(record)  # what stop() must undo from here on
            if self.cgroups is not None:
                self.cgroups.create(key, self.limits.memory_mb << 20, self.limits.max_processes)
            _write_ledger(control, session, record)
            confined = self._bring_up(session, record, control, env, kernel, startup_timeout)
        except BaseException as err:
            self.stop(session)
            if isinstance(err, (IsolationError, OSError)):
                raise IsolationError(f"the session sandbox did not start: {err}") from None
            raise
        return confined

    def _bring_up(self, session, record: JailRecord, control: Path, env: dict[str, str], kernel: dict | None,
                  startup_timeout: float) -> ConfinedSession:
        """Start the jail and its supervisor and configure it; the record is saved (state,
        ledger, and the session row when the backend gave a way) before the supervisor
        is first asked anything."""
        record.pid, errors = self._spawn(session, record)
        try:
            session.state["jail"] = dataclasses.asdict(record)
            _write_ledger(control, session, record)
            if getattr(session, "save_state", None) is not None:
                session.save_state()  # a start cut off from here on is still ended in full
            confined = ConfinedSession(record, 1 << 20)
            try:
                confined.request("configure", startup_timeout, env=env, cpu_seconds=self.limits.cpu_seconds,
                                 file_size_mb=self.limits.file_size_mb, kernel=kernel or {})
            except IsolationError as err:
                detail = _read_pipe(errors)
                raise IsolationError(f"{err}" + (f"; its output: {detail}" if detail else "")) from None
        finally:
            os.close(errors)
        return confined

    def _spawn(self, session, record: JailRecord) -> tuple[int, int]:
        workspace = str(session.workspace)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(record.socket):
                os.unlink(record.socket)
            channel.bind_unix(listener, record.socket)
            os.chmod(record.socket, 0o600)
            listener.listen(64)
            fd = listener.fileno()
            command = [sys.executable, "-I", "-c", _SUPERVISOR, str(fd), workspace]
            net = _NetworkPipes() if self.confined and self.limits.network == "full" else None
            try:
                if self.confined:
                    command = self._jail_command(session, record, command, net)
                pid, errors = self._launch(command, _launch_env(self.cgroups, record.key), workspace,
                                           (fd, *(net.inherited if net else ())))
                if net is not None:
                    self._attach_network(record, net)
                return pid, errors
            finally:
                if net is not None:
                    net.close()
        finally:
            listener.close()

    def _jail_command(self, session, record: JailRecord, command: list[str], net: "_NetworkPipes | None") -> list[str]:
        spec = JailSpec(Path(session.workspace), [*python_paths(), *self.read_only], self.hidden,
                        workspace_size=None if record.mounted else self.limits.disk_mb << 20,
                        info_fd=net.info_write if net else None, resolv_conf_fd=net.resolv_read if net else None)
        jail, staged = bwrap_argv(spec, staged=record.uid is not None)
        command = [*jail, "--", *command]
        if record.uid is not None:
            command = [_UNSHARE, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", STAGE_SCRIPT,
                       "sh", *staged, "--", *_drop_to(record.uid), *command]
        return command

    def _attach_network(self, record: JailRecord, net: "_NetworkPipes") -> None:
        """Give the jail its user-mode network (slirp4netns, as the session, in its cgroup)."""
        os.close(net.info_write)
        net.info_write = -1
        child = network.read_child_pid(net.info_read, 30)
        userns = network.userns_of_netns(child)
        ready_read, ready_write = os.pipe()
        try:
            command = network.slirp_command(child, userns, ready_write)
            if record.uid is not None:
                command = [*_drop_to(record.uid), *command]
            _, errors = self._launch(command, _launch_env(self.cgroups, record.key), "/", (userns, ready_write))
            os.close(ready_write)
            ready_write = -1
            try:
                network.wait_ready(ready_read, 30)
            except IsolationError as err:
                time.sleep(0.2)
                raise IsolationError(f"{err}: {_read_pipe(errors)}") from None
            finally:
                os.close(errors)
        finally:
            os.close(userns)
            os.close(ready_read)
            if ready_write >= 0:
                os.close(ready_write)

    def _launch(self, command: list[str], env: dict, workspace: str, fds: tuple) -> tuple[int, int]:
        """Start the launcher detached; (its pid, the read end of its stderr). The
        stderr pipe is read only if the start fails and closed after, so a session has
        no file of the server's to write into."""
        err_read, err_write = os.pipe()
        try:
            # setsid --fork: the launcher's parent exits at once, so the jail is never a
            # child (or a zombie) of a server worker.
            launcher = subprocess.Popen(
                [_SETSID, "--fork", "/bin/sh", "-c", _LAUNCH, "sh", *command],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_write, env=env,
                cwd="/" if self.confined else workspace, pass_fds=fds)
        except BaseException:
            os.close(err_read)
            raise
        finally:
            os.close(err_write)
        out, _ = launcher.communicate(timeout=30)
        try:
            return int(out.split()[0]), err_read
        except (IndexError, ValueError):
            detail = _read_pipe(err_read)
            raise IsolationError(f"the session launcher did not start: {detail or 'no output'}") from None

    def restart(self, session, env: dict[str, str], kernel: dict | None = None,
                startup_timeout: float = 30.0) -> ConfinedSession:
        """A fresh supervisor for a session whose supervisor died (its own code killed
        it): everything still running in the session ends; the workspace stays when it
        is mounted on the host (a root server), and the uid stays the session's."""
        record = JailRecord.from_state(session.state.get("jail"))
        if record is None:
            raise SupervisorError("the session has no sandbox to restart")
        if self.cgroups is not None:
            self.cgroups.kill(record.key)
        elif record.pid:
            _kill_process_session(record.pid)
        try:
            confined = self._bring_up(session, record, control_dir(Path(session.workspace).parent), env, kernel,
                                      startup_timeout)
        except (IsolationError, OSError) as err:
            raise IsolationError(f"the session sandbox could not be restarted: {err}") from None
        return confined

    # -- use ---------------------------------------------------------------------
    def attach(self, session, max_reply_bytes: int) -> ConfinedSession:
        """The live session's supervisor (from its recorded state)."""
        record = JailRecord.from_state(session.state.get("jail"))
        if record is None or not record.pid:
            raise SupervisorError("the session has no sandbox (it failed to start or has ended)")
        return ConfinedSession(record, max_reply_bytes)

    # -- end ---------------------------------------------------------------------
    def stop(self, session) -> None:
        """End every process of the session, unmount its workspace, free its uid.
        Safe to call more than once and for a session that never fully started."""
        record = JailRecord.from_state(session.state.get("jail"))
        key = record.key if record else session_key(session.session_id)
        control = control_dir(Path(session.workspace).parent)
        if record is not None:
            channel.forget(record.socket)
        if self.cgroups is not None:
            if not self.cgroups.kill(key):
                log.warning("session %s: processes survived SIGKILL", session.session_id)
            self.cgroups.remove(key)
        elif record is not None and record.pid:
            _kill_process_session(record.pid)
        if record is not None and record.mounted:
            _unmount(Path(session.workspace))
        if record is not None and record.uid is not None:
            release_uid(control / "uids", record.uid, record.holder or session.session_id)
        for suffix in (".sock", ".json"):
            try:
                os.unlink(control / f"{key}{suffix}")
            except FileNotFoundError:
                pass



# -- the ledger: every jail of this workspace root, for the cleaner -------------------
def _write_ledger(control: Path, session, record: JailRecord) -> None:
    """``<control>/<key>.json``: what ending this jail needs, kept until it is ended, so
    a jail whose session was lost (a temporary session of a killed worker, a session
    whose row ended without the backend hook) is found and ended by :func:`sweep`."""
    entry = {"session_id": session.session_id, "workspace": str(session.workspace),
             "temporary": bool(session.temporary), "owner": owner_id(),
             "jail": dataclasses.asdict(record)}
    if getattr(session, "pooled", None):
        entry["pool"] = session.pooled  # still in the pool: ended by .pool, never by sweep()
    tmp = control / f".{record.key}.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as fh:
        json.dump(entry, fh)
    os.replace(tmp, control / f"{record.key}.json")


def sweep(confinement: "Confinement", workspace_root: Path, is_live: Callable[[str], bool]) -> int:
    """End every jail under ``workspace_root`` that no session owns any more: a
    temporary session whose server process died, or a session ``is_live`` says has
    ended. Returns how many were ended. Safe to run in every server process at once."""
    control = control_dir(workspace_root)
    ended = 0
    for path in control.glob("s*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("pool"):  # a pool entry not handed out yet: ended under the pool's lock, if orphaned
            from .pool import sweep_entry

            ended += sweep_entry(confinement, workspace_root, path)
            continue
        # a temporary session's owner on another node cannot be judged here: left to that node
        orphan = owner_alive(str(entry["owner"])) is False if entry.get("temporary") else not is_live(entry["session_id"])
        if not orphan:
            continue
        from ..tools.base import SessionInfo  # the shape stop() reads; no backend involved

        info = SessionInfo(entry["session_id"], "", "", Path(entry["workspace"]), {}, {"jail": entry["jail"]},
                           bool(entry.get("temporary")))
        confinement.stop(info)
        shutil.rmtree(info.workspace, ignore_errors=True)
        ended += 1
    return ended


def _drop_to(uid: int) -> list[str]:
    return [_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]


def _launch_env(cgroups: CgroupTree | None, key: str) -> dict[str, str]:
    procs = " ".join(cgroups.procs_files(key)) if cgroups else ""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "AF_CGROUP_PROCS": procs}


class _NetworkPipes:
    """The descriptors a ``network: full`` jail is started with: bwrap reports its pid
    on one, reads the jail's resolv.conf from the other."""

    def __init__(self):
        self.info_read, self.info_write = os.pipe()
        self.resolv_read, resolv_write = os.pipe()
        os.write(resolv_write, network.RESOLV_CONF)
        os.close(resolv_write)

    @property
    def inherited(self) -> tuple[int, int]:
        return self.info_write, self.resolv_read

    def close(self) -> None:
        for fd in (self.info_read, self.info_write, self.resolv_read):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def control_dir(workspace_root: Path) -> Path:
    """The server-only folder for supervisor sockets, the jail ledger and uid slots,
    beside the workspaces (shared by every server using that workspace root; removed
    with it)."""
    path = Path(workspace_root) / ".control"
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise IsolationError(f"the control folder {path} is not a private folder of this user; remove it")
    return path


def _require_bwrap(resource: str) -> None:
    """Refuse to build a backend that cannot confine: no bubblewrap, or user
    namespaces that do not work here (probed once per process)."""
    with _probe_lock:
        if "bwrap" not in _probed:
            _probed["bwrap"] = _probe_bwrap()
        problem = _probed["bwrap"]
    if problem:
        raise IsolationUnavailable(
            f"resource '{resource}' cannot confine its sessions: {problem}. Install bubblewrap (Debian/Ubuntu: "
            "apt-get install bubblewrap) and allow user namespaces, or set server.isolation to \"none\" to run "
            "session code unconfined as the server's own user")


def _probe_bwrap() -> str | None:
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    argv = [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
    if os.geteuid() == 0:
        argv = [_SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap could not run ({err})"
    if res.returncode != 0:
        return f"bwrap cannot create namespaces here ({res.stderr.decode(errors='replace').strip()[:300]})"
    return None


# -- workspace mounts (root only) ------------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


def _mount_workspace(workspace: Path, uid: int | None, size: int) -> bool:
    """Mount a size-capped tmpfs owned by the session on its workspace (the disk quota).
    False when this process may not mount (the jail then mounts one of its own)."""
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    options = f"size={size},mode=0700{owner}".encode()
    if _libc.mount(b"tmpfs", str(workspace).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        log.debug("tmpfs on %s not mounted: %s", workspace, os.strerror(err))
        return False
    return True


def _unmount(workspace: Path) -> None:
    if _libc.umount2(str(workspace).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            log.warning("unmounting %s failed: %s", workspace, os.strerror(err))


def _kill_process_session(sid: int) -> None:
    """Unconfined mode (no cgroup): the supervisor, every process of its session (it
    called setsid) and every descendant, such as a kernel that started a session of its
    own — collected before any is killed, since orphans move to another parent."""
    parents: dict[int, int] = {}
    victims = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        if fields[3] == str(sid):
            victims.add(int(entry))
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in victims and pid not in victims:
                victims.add(pid)
                grew = True
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _read_pipe(fd: int, limit: int = 2000) -> str:
    """What a pipe holds now, without waiting for its writers."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, limit).decode("utf-8", "replace").strip()
    except (BlockingIOError, OSError):
        return ""
