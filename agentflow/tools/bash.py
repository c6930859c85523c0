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
import shutil
import signal
import subprocess
import time
import uuid
import zlib
from pathlib import Path

from .base import Backend, BackendConfigError, SessionInfo, ToolContext, ToolError, ToolTimeout, tool

_STATE_DIR = ".agentflow"
_UID_BASE, _UID_SPAN = 200_000, 100_000

# The wrapper, run as ``bash -c WRAPPER bash STATE_DIR CALL_ID COMMAND``: limits, restore
# the session's directory and exports, save them (to files of this call, which the
# server renames into place, so concurrent calls never read a half-written state) on
# any exit, then run the command. Only builtins, so a call costs one process.
_WRAPPER = r"""
ulimit -t %(cpu)s -v %(mem)s -f %(fsize)s -u %(nproc)s 2>/dev/null
__af_state=$1; __af_call=$2; __af_cmd=$3; shift 3
if [ -f "$__af_state/env" ]; then . "$__af_state/env" 2>/dev/null; fi
if [ -f "$__af_state/cwd" ]; then read -r __af_dir < "$__af_state/cwd"; cd -- "$__af_dir" 2>/dev/null || cd -- "$HOME"; fi
__af_save() { { pwd > "$__af_state/cwd.$__af_call"; export -p > "$__af_state/env.$__af_call"; } 2>/dev/null; }
trap __af_save EXIT
eval "$__af_cmd"
"""


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
        call = uuid.uuid4().hex[:12]
        out_path, err_path = state / f"out.{call}", state / f"err.{call}"
        uid = session.state.get("uid")
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(session.workspace),
               "LANG": os.environ.get("LANG", "C.UTF-8"), "TERM": "dumb", **self.extra_env}
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            if uid:
                os.fchown(out.fileno(), uid, uid)
                os.fchown(err.fileno(), uid, uid)
            proc = subprocess.Popen(
                [self.shell, "--noprofile", "--norc", "-c", self.wrapper, "bash", str(state), call, command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=session.workspace, env=env,
                start_new_session=True, close_fds=True,
                **({"user": uid, "group": uid, "extra_groups": []} if uid else {}),
            )
            timed_out = False
            try:
                proc.wait(timeout=ctx.remaining)
            except subprocess.TimeoutExpired:
                timed_out = True
            # Like a closing terminal: whatever the command left in its process group
            # ends with it (a fork bomb included). Daemons must detach with `setsid`.
            _kill_group(proc)
        try:
            result = {
                **_read_capped(out_path, "stdout", ctx.max_output_bytes),
                **_read_capped(err_path, "stderr", ctx.max_output_bytes),
                "exit_code": proc.returncode,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            }
        finally:
            for p in (out_path, err_path):
                p.unlink(missing_ok=True)
            _commit_state(state, call)
        if proc.returncode is not None and proc.returncode < 0:
            result["signal"] = signal.Signals(-proc.returncode).name
        if timed_out:
            raise ToolTimeout(f"command timed out after {ctx.timeout:g} s; its processes were killed", result)
        if proc.returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            raise ToolError("command was stopped for writing a file over the size limit", result)
        return result


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


def _commit_state(state: Path, call: str) -> None:
    for name in ("cwd", "env"):
        written = state / f"{name}.{call}"
        try:
            if written.stat().st_size > 0:
                os.replace(written, state / name)
            else:
                written.unlink()
        except FileNotFoundError:
            pass


def _read_capped(path: Path, name: str, cap: int) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(cap)
    return {name: raw.decode("utf-8", "replace"), f"{name}_bytes": size, f"{name}_truncated": size > cap}
