"""``bash:run``: shell commands in the session workspace.

Each call is a fresh ``bash`` whose working directory and exported variables are
restored from the session's state files and saved again when it exits, so ``cd`` and
``export`` persist across calls while no shell process has to outlive a call.

When the server runs as root, each session's commands run under a uid of their own
(``run_as: "session"``), which makes the process-count limit hold per session — a
fork bomb cannot starve the machine — and keeps sessions out of each other's files.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

from .base import Backend, BackendConfigError, SessionInfo, ToolContext, ToolError, ToolTimeout, tool

_STATE_DIR = ".agentflow"
_UID_BASE, _UID_SPAN = 200_000, 100_000
_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

# The wrapper, run as ``bash -c WRAPPER bash ENV_FILE STATE_FD COMMAND`` in the saved
# working directory: limits, restore the exports, run the command, and on any exit
# write the directory and exports to the state pipe (the server saves them only when
# they changed). Only builtins, so a call costs one process.
_WRAPPER = r"""
ulimit -t %(cpu)s -v %(mem)s -f %(fsize)s -u %(nproc)s 2>/dev/null
__af_env=$1; __af_fd=$2; __af_cmd=$3; shift 3
if [ -n "$__af_env" ]; then . "$__af_env" 2>/dev/null; fi
__af_save() { { printf '%%s\0' "$PWD"; export -p; } >&"$__af_fd" 2>/dev/null; }
trap __af_save EXIT
eval "$__af_cmd"
"""
_UNSAVED = ("declare -x PWD=", "declare -x OLDPWD", "declare -x SHLVL=")


class BashBackend(Backend):
    name = "bash"
    description = "Shell commands in a per-session workspace"
    config_keys = frozenset({"run_as", "cpu_seconds", "memory_mb", "file_size_mb", "max_processes",
                             "default_timeout", "env", "shell"})

    def check_config(self) -> None:
        super().check_config()
        run_as = self.config.get("run_as", "session" if os.geteuid() == 0 else "server")
        if run_as not in ("session", "server"):
            raise BackendConfigError("resource 'bash': run_as must be 'session' or 'server'")
        if run_as == "session" and os.geteuid() != 0:
            raise BackendConfigError("resource 'bash': run_as 'session' needs the server to run as root")
        if run_as == "session" and not os.access(_SETPRIV, os.X_OK):
            raise BackendConfigError("resource 'bash': run_as 'session' needs setpriv (Debian package util-linux); "
                                     "install it or set run_as to 'server'")
        self.run_as = run_as
        self.wrapper = _WRAPPER % {
            "cpu": int(self.config.get("cpu_seconds", 600)),
            "mem": int(self.config.get("memory_mb", 2048)) * 1024,
            "fsize": int(self.config.get("file_size_mb", 256)) * 2048,  # 512-byte blocks
            "nproc": int(self.config.get("max_processes", 256)),
        }
        self.shell = self.config.get("shell", shutil.which("bash") or "/bin/bash")
        self.extra_env = {str(k): str(v) for k, v in (self.config.get("env") or {}).items()}

    # -- sessions ----------------------------------------------------------------
    def _uid(self, session: SessionInfo) -> int | None:
        if self.run_as != "session":
            return None
        return _UID_BASE + zlib.crc32(session.session_id.encode()) % _UID_SPAN

    def create_session(self, session: SessionInfo) -> None:
        state = session.workspace / _STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        uid = self._uid(session)
        if uid is not None:
            for path in (session.workspace, state):
                os.chown(path, uid, uid)
            os.chmod(session.workspace, 0o700)
        session.state["uid"] = uid

    def destroy_session(self, session: SessionInfo) -> None:
        uid = session.state.get("uid")
        if uid:  # background jobs started by the session: end every process of its uid
            subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    # -- the tool ----------------------------------------------------------------
    @tool(
        "run",
        "Run a bash command in your workspace and return its stdout, stderr and exit code. "
        "The working directory and exported variables persist between calls of your session; "
        "background jobs end with the command unless started with `setsid`. "
        "Output is cut at a size limit (the full size is reported).",
        {
            "properties": {
                "command": {"type": "string", "minLength": 1, "description": "The bash command(s) to run."},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds before the command is killed (default 30)."},
            },
            "required": ["command"],
        },
        default_timeout=30,
        max_timeout=3600,
    )
    def run(self, ctx: ToolContext, command: str) -> dict:
        session = ctx.session
        state = session.workspace / _STATE_DIR
        cwd, env_file = _saved_state(state, session.workspace)
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(session.workspace),
               "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": "dumb", **self.extra_env}
        argv = [self.shell, "--noprofile", "--norc", "-c", self.wrapper, "bash", env_file]
        uid = session.state.get("uid")
        if uid:
            # setpriv drops to the session's uid after exec, so Popen can still use
            # vfork (a user= argument would force a full fork of the server process).
            argv = [_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
        started = time.monotonic()
        state_read, state_write = os.pipe()
        with tempfile.TemporaryFile(dir=state) as out, tempfile.TemporaryFile(dir=state) as err:
            try:
                proc = subprocess.Popen(
                    [*argv, str(state_write), command], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    cwd=cwd, env=env, start_new_session=True, pass_fds=(state_write,))
            finally:
                os.close(state_write)
            timed_out = not _wait(proc, ctx.remaining)
            # Like a closing terminal: whatever the command left in its process group
            # ends with it (a fork bomb included). Daemons must detach with `setsid`.
            _kill_group(proc)
            _save_state(state, _drain(state_read), cwd, env_file)
            result = {
                **_read_capped(out, "stdout", ctx.max_output_bytes),
                **_read_capped(err, "stderr", ctx.max_output_bytes),
                "exit_code": proc.returncode,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            }
        if proc.returncode is not None and proc.returncode < 0:
            result["signal"] = signal.Signals(-proc.returncode).name
        if timed_out:
            raise ToolTimeout(f"command timed out after {ctx.timeout:g} s; its processes were killed", result)
        if proc.returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            raise ToolError("command was stopped for writing a file over the size limit", result)
        return result


def _saved_state(state: Path, workspace: Path) -> tuple[Path, str]:
    """The session's working directory (the workspace when the saved one is gone) and
    its exports file (empty when none was saved)."""
    try:
        cwd = Path((state / "cwd").read_text())
    except FileNotFoundError:
        cwd = workspace
    if not cwd.is_dir():
        cwd = workspace
    env_file = state / "env"
    return cwd, str(env_file) if env_file.exists() else ""


def _save_state(state: Path, raw: bytes, cwd: Path, env_file: str) -> None:
    """Store the directory and exports a call ended with, when they changed (a rename
    into place, so concurrent calls never read half a file)."""
    if b"\0" not in raw:
        return  # killed before its exit trap ran: keep the previous state
    new_cwd, exports = raw.split(b"\0", 1)
    exports = b"".join(line for line in exports.splitlines(keepends=True)
                       if not line.decode(errors="replace").startswith(_UNSAVED))
    old_exports = Path(env_file).read_bytes() if env_file else b""
    for name, new, old in (("cwd", new_cwd, str(cwd).encode()), ("env", exports, old_exports)):
        if new != old:
            tmp = state / f".{name}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_bytes(new)
            os.replace(tmp, state / name)


def _drain(fd: int) -> bytes:
    """Read what the exit trap wrote, without waiting for writers that a detached
    background job may still hold open."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _wait(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait for the process to exit (True) or the time to run out (False), waking at
    once on exit through a pidfd instead of polling."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, int(seconds * 1000))):
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command's process group until nothing in it is left (a fork bomb keeps
    forking while we kill)."""
    for _ in range(200):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        try:  # reap the leader so that an empty group reads as gone
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        raise ToolError("command could not be killed") from None


def _read_capped(fh, name: str, cap: int) -> dict:
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    raw = fh.read(cap)
    return {name: raw.decode("utf-8", "replace"), f"{name}_bytes": size, f"{name}_truncated": size > cap}
