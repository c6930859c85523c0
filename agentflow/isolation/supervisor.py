"""The per-session supervisor: runs *inside* the session's jail, as the session.

Started by :mod:`.session` with a listening unix socket as an inherited descriptor, it
serves framed JSON requests (:mod:`.channel`), one after the other on each connection
(the server keeps a connection for its next request), each connection in a thread of
its own:

- ``configure`` — the environment for the session's programs, and limits;
- ``bash`` — one shell command; ``cd`` and ``export`` persist in this process's memory;
  output is captured through pipes and capped while it streams;
- ``kernel_exec`` — Python in the session's IPython kernel, started on first use and
  again after it died (the kernel is this process's child, so it is always reaped);
- ``copy_tree`` — copy a folder (e.g. a read-only data root) into the workspace;
- ``exec`` / ``spawn`` / ``alive`` / ``kill`` — run a program to completion, or start a
  long-lived one (a display, a browser) and look after it;
- ``browser`` — one action of the ``browser`` backend on the session's Chromium, which
  Playwright in this process drives over a DevTools *pipe* (no DevTools port exists);
- ``mcp`` — the session's stdio MCP servers, this process's children, spoken to with
  the ``mcp`` SDK (``tools.mcp.host``);
- ``ping``.

Nothing here is trusted by the server: this process runs as the session and the
session's code can replace it. It exists so that file work, process handling and
output buffering happen with the session's privileges and memory, not the server's.
"""
from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from .channel import ACK, read_frame, write_frame

_MAX_REQUEST = 64 << 20

# Run as ``bash -c WRAPPER bash STATE_FD``, started *before* the call it serves (a warm
# spare, so a call does not wait for bash to start): it reads the working directory, the
# saved exports and the command from its stdin (NUL-separated), restores them, runs the
# command, and on any exit writes the directory and exports to the state pipe. Only
# builtins, so a call costs no other process. ``ulimit -t`` is per command; file size and
# the rest are the supervisor's own limits, inherited.
_WRAPPER = r"""
ulimit -t %(cpu)d 2>/dev/null
__af_fd=$1; shift
IFS= read -r -d '' __af_cwd; IFS= read -r -d '' __af_state; IFS= read -r -d '' __af_cmd
exec </dev/null
cd -- "$__af_cwd" 2>/dev/null
if [ -n "$__af_state" ]; then eval "$__af_state" 2>/dev/null; fi
unset __af_state __af_cwd
__af_save() { { printf '%%s\0' "$PWD"; export -p; } >&"$__af_fd" 2>/dev/null; }
trap __af_save EXIT
eval "$__af_cmd"
"""
_UNSAVED = (b"declare -x PWD=", b"declare -x OLDPWD", b"declare -x SHLVL=", b"declare -x __AF_STATE")

# The session's *forking shell*: one long-lived ``bash -c FORKER bash SUPERVISOR_PID``
# per session, so a call costs a fork of a warm bash instead of starting one (exec,
# dynamic linking, start-up: most of a call's CPU). For each line ``IN OUT ERR STATE
# CPU`` on its stdin — descriptors of *this* process, opened through /proc before the
# fork so they are the child's before this process closes its own ends — it starts the
# wrapper below as a background job (``set -m``: the job is its own process group, so a
# timeout still kills everything it started), prints the job's pid, waits for it and
# prints its wait status. The job turns job control off again, so what it runs stays
# in its group. The state it saves on exit starts with its exit status; the wait status
# counts only when it has none (killed by a signal) — the job's end is watched through a
# pidfd, not through this shell, whose `wait` a signal the job sends it cuts short. One
# call at a time; a call that finds it busy (calls of one session at once) or gone starts a
# shell of its own as before. ``$$`` in a command is this shell's pid.
_FORKER = r"""
set -m
trap : TERM INT HUP QUIT
__af_sup=$1; shift
while IFS=' ' read -r __af_in __af_out __af_err __af_st __af_cpu; do
  __af_pid=
  { (
      set +m; trap - TERM INT HUP QUIT
      unset __af_sup __af_in __af_out __af_err __af_st __af_pid __af_s
      ulimit -t "$__af_cpu" 2>/dev/null; unset __af_cpu
      IFS= read -r -d '' __af_cwd; IFS= read -r -d '' __af_state; IFS= read -r -d '' __af_cmd
      exec </dev/null
      cd -- "$__af_cwd" 2>/dev/null
      if [ -n "$__af_state" ]; then eval "$__af_state" 2>/dev/null; fi
      unset __af_state __af_cwd
      __af_save() { { printf '%s\0%s\0' "$?" "$PWD"; export -p; } >&7 2>/dev/null; }
      trap __af_save EXIT
      eval "$__af_cmd"
    ) <&4 >&5 2>&6 4<&- 5>&- 6>&- &
    __af_pid=$!
  } 4<"/proc/$__af_sup/fd/$__af_in" 5>"/proc/$__af_sup/fd/$__af_out" 6>"/proc/$__af_sup/fd/$__af_err" \
    7>"/proc/$__af_sup/fd/$__af_st"
  if [ -z "$__af_pid" ]; then printf -- '-\n'; continue; fi
  printf '%s\n' "$__af_pid"
  wait -f "$__af_pid"; printf '%s\n' "$?"
done
"""
_FORKER_ANSWER = 5.0  # seconds the forking shell gets to say it started or ended a job


class _Capture:
    """The first ``cap`` bytes of a stream and its total size."""

    def __init__(self, cap: int):
        self.cap, self.size, self.parts = cap, 0, []

    def add(self, chunk: bytes) -> None:
        room = self.cap - min(self.cap, self.size)
        if room:
            self.parts.append(chunk[:room])
        self.size += len(chunk)

    def answer(self, name: str) -> dict:
        text = b"".join(self.parts).decode("utf-8", "replace")
        return {name: text, f"{name}_bytes": self.size, f"{name}_truncated": self.size > self.cap}


class _Forker:
    """The session's forking shell (see ``_FORKER``): a child of this process."""

    def __init__(self, shell: str, workspace: str, env: dict[str, str]):
        self.proc = subprocess.Popen([shell, "--noprofile", "--norc", "-c", _FORKER, "bash", str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=workspace, env=env, start_new_session=True)
        self.lock = threading.Lock()
        self.buffer = b""
        self.broken = False

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None

    def start(self, fds: tuple[int, int, int, int], cpu: int) -> int | None:
        """Start a job on these descriptors of this process; its pid, or None when the
        shell did not start it (it is then marked broken)."""
        try:
            self.proc.stdin.write(("%d %d %d %d %d\n" % (*fds, cpu)).encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self.broken = True
            return None
        line = self.line(_FORKER_ANSWER)
        if line is None or not line.isdigit():
            self.broken = True
            return None
        return int(line)

    def line(self, timeout: float) -> str | None:
        """The shell's next line within ``timeout`` seconds (None: it ended or is stuck)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self.buffer) > 64:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], left)
                chunk = os.read(fd, 256) if ready else b""
            except OSError:
                return None
            if ready and not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def close(self) -> None:
        _kill_group(self.proc)
        for fh in (self.proc.stdin, self.proc.stdout):
            try:
                fh.close()
            except OSError:
                pass


class Supervisor:
    def __init__(self, workspace: str):
        self.workspace = workspace
        self.env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workspace}
        self.cpu_seconds = 600
        self.shell = shutil.which("bash") or "/bin/bash"
        self.cwd = workspace
        self.exports = b""
        self.state_lock = threading.Lock()
        self.kernel = None
        self.kernel_lost: str | None = None
        self.kernel_restarts = 0
        self.kernel_lock = threading.Lock()
        self.kernel_config: dict = {}
        self.children: dict[int, subprocess.Popen] = {}
        self.spare: tuple[subprocess.Popen, int] | None = None
        self.spare_lock = threading.Lock()
        self.forker: _Forker | None = None
        self.forker_lock = threading.Lock()
        self.after_reply = _AfterReply()

    # -- dispatch ----------------------------------------------------------------
    def handle(self, request: dict) -> dict:
        op = request.get("op")
        method = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if method is None:
            return {"ok": False, "error": f"unknown operation {op!r}"}
        return {"ok": True, **method(request)}

    def op_ping(self, _req: dict) -> dict:
        return {"pid": os.getpid(), "uid": os.getuid()}

    def op_configure(self, req: dict) -> dict:
        with self.spare_lock:  # a spare shell has the old environment
            spare, self.spare = self.spare, None
        if spare is not None:
            _discard(spare)
        with self.forker_lock:  # so is the forking shell
            forker, self.forker = self.forker, None
        if forker is not None:
            forker.close()
        self.env = {str(k): str(v) for k, v in (req.get("env") or {}).items()}
        self.env.setdefault("HOME", self.workspace)
        self.cpu_seconds = int(req.get("cpu_seconds") or 600)
        self.kernel_config = dict(req.get("kernel") or {})
        fsize = int(req.get("file_size_mb") or 0) << 20
        if fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        self.after_reply.append(self._forker_ready)
        return self.op_ping(req)

    # -- bash --------------------------------------------------------------------
    def op_bash(self, req: dict) -> dict:
        command, timeout, cap = str(req["command"]), float(req["timeout"]), int(req["max_output"])
        with self.state_lock:
            cwd = self.cwd if os.path.isdir(self.cwd) else self.workspace
            exports = self.exports
        started = time.monotonic()
        stdin = b"\0".join([cwd.encode("utf-8", "surrogateescape"), exports,
                            command.encode("utf-8", "surrogateescape")]) + b"\0"
        forker = self._take_forker()
        if forker is not None:
            try:
                answer = self._bash_forked(forker, stdin, timeout, cap, cwd, exports)
            finally:
                forker.lock.release()
            if answer is not None:
                answer["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
                return answer
        shell = self._take_shell()
        proc, state_read = shell
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out, err, timed_out = _run_to_end(proc, timeout, cap)
        self._save_state(b"0\0" + _read_available(state_read), cwd, exports)
        answer = {**out.answer("stdout"), **err.answer("stderr"), "exit_code": proc.returncode,
                  "duration_ms": round((time.monotonic() - started) * 1000, 2), "timed_out": timed_out}
        if proc.returncode is not None and proc.returncode < 0:
            answer["signal"] = signal.Signals(-proc.returncode).name
        return answer

    def _take_forker(self) -> "_Forker | None":
        """The forking shell, locked for this call (started when there is none or it
        died); None when another call of the session is using it."""
        with self.forker_lock:
            forker = self._live_forker()
            if forker is None or not forker.lock.acquire(blocking=False):
                return None
            return forker

    def _live_forker(self) -> "_Forker | None":
        """(With ``forker_lock`` held.) The forking shell, started anew when there is
        none or it died and is not in use."""
        forker = self.forker
        if forker is not None and not forker.alive() and not forker.lock.locked():
            forker.close()
            forker = self.forker = None
        if forker is None:
            try:
                forker = self.forker = _Forker(self.shell, self.workspace, self.env)
            except OSError:
                return None
        return forker

    def _forker_ready(self) -> None:
        with self.forker_lock:  # a call meanwhile waits for it, then uses it
            self._live_forker()

    def _bash_forked(self, forker: "_Forker", stdin: bytes, timeout: float, cap: int, cwd: str,
                     exports: bytes) -> dict | None:
        """One command as a job of the forking shell; None when the shell could not
        start it (nothing ran; the caller starts a shell of its own)."""
        # its input is a file in memory, not a pipe: bash's `read` takes a file in
        # blocks, a pipe byte by byte
        mem = os.memfd_create("bash-input", os.MFD_CLOEXEC)
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, state
        ours = [p[0] for p in pipes]
        theirs = [mem, *(p[1] for p in pipes)]
        try:
            _write_all(mem, stdin)
            pid = forker.start(tuple(theirs), self.cpu_seconds)
        finally:
            for fd in theirs:
                os.close(fd)
        out_r, err_r, state_r = ours
        if pid is None:
            for fd in ours:
                os.close(fd)
            return None
        pidfd = None
        try:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # already ended and reaped
                pass
            out, err = _Capture(cap), _Capture(cap)
            timed_out = not _pump(pidfd, {out_r: out, err_r: err}, timeout)
            if timed_out:
                _kill_pgid(pid, once=True)
            status = forker.line(_FORKER_ANSWER)  # the shell has reaped the job
            if status is None or not status.isdigit():
                forker.broken = True
            _kill_pgid(pid)  # whatever the job left in its group ends with it
            for fd, capture in ((out_r, out), (err_r, err)):
                _drain_fd(fd, capture)
            raw = _read_available(state_r)
            state_r = -1
        finally:
            if pidfd is not None:
                os.close(pidfd)
            for fd in (out_r, err_r, state_r):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        exit_code, sig = None, None
        if b"\0" in raw:  # it exited (its exit trap ran): the status it exited with
            head = raw.split(b"\0", 1)[0]
            exit_code = int(head) if head.isdigit() else None
        elif status is not None and status.isdigit() and int(status) > 128:  # killed by a signal
            try:
                sig = signal.Signals(int(status) - 128)
                exit_code = -sig.value
            except ValueError:
                exit_code = int(status)
        elif status is not None and status.isdigit():
            exit_code = int(status)
        self._save_state(raw, cwd, exports)
        answer = {**out.answer("stdout"), **err.answer("stderr"), "exit_code": exit_code, "timed_out": timed_out}
        if sig is not None:
            answer["signal"] = sig.name
        return answer

    def _new_shell(self) -> tuple[subprocess.Popen, int]:
        state_read, state_write = os.pipe()
        try:
            proc = subprocess.Popen(
                [self.shell, "--noprofile", "--norc", "-c", _WRAPPER % {"cpu": self.cpu_seconds}, "bash",
                 str(state_write)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.workspace,
                env=self.env, start_new_session=True, pass_fds=(state_write,))
        except BaseException:
            os.close(state_read)
            raise
        finally:
            os.close(state_write)
        return proc, state_read

    def _take_shell(self) -> tuple[subprocess.Popen, int]:
        """The warm spare shell (a new one is started for the next call), or a fresh one
        when another call took it."""
        with self.spare_lock:
            spare, self.spare = self.spare, None
        if spare is None or spare[0].poll() is not None:
            if spare is not None:
                _discard(spare)
            spare = self._new_shell()
        self.after_reply.append(self._refill_spare)
        return spare

    def _refill_spare(self) -> None:
        with self.spare_lock:
            if self.spare is not None:
                return
        shell = self._new_shell()
        with self.spare_lock:
            if self.spare is None:
                self.spare, shell = shell, None
        if shell is not None:
            _discard(shell)

    def _save_state(self, raw: bytes, cwd: str, exports: bytes) -> None:
        if raw.count(b"\0") < 2:
            return  # killed before its exit trap ran: keep the previous state
        _status, new_cwd, new_exports = raw.split(b"\0", 2)
        new_exports = b"".join(line for line in new_exports.splitlines(keepends=True)
                               if not line.startswith(_UNSAVED))
        with self.state_lock:
            self.cwd = new_cwd.decode("utf-8", "surrogateescape") or self.workspace
            self.exports = new_exports

    # -- programs ----------------------------------------------------------------
    def op_exec(self, req: dict) -> dict:
        """Run ``argv`` to completion (stdin from ``input``, output capped), like bash
        but without a shell or saved state: for tools that drive programs (xdotool…)."""
        argv = [str(a) for a in req["argv"]]
        timeout, cap = float(req["timeout"]), int(req.get("max_output", 65536))
        env = {**self.env, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
        data = str(req.get("input") or "").encode("utf-8", "surrogateescape")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if data else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=req.get("cwd") or self.workspace,
                                    env=env, start_new_session=True)
        except OSError as err:
            return {"started": False, "error": f"{type(err).__name__}: {err}"}
        if data:
            try:
                proc.stdin.write(data)
            except BrokenPipeError:
                pass
            proc.stdin.close()
        out, err, timed_out = _run_to_end(proc, timeout, cap)
        return {"started": True, **out.answer("stdout"), **err.answer("stderr"), "exit_code": proc.returncode,
                "timed_out": timed_out}

    def op_spawn(self, req: dict) -> dict:
        """Start a long-lived program (a display server, a browser) in the jail; it is
        this process's child, so it is reaped, and it ends with the session."""
        argv = [str(a) for a in req["argv"]]
        env = {**self.env, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
        log = req.get("log")
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=req.get("cwd") or self.workspace, env=env, start_new_session=True)
        except OSError as err:
            return {"started": False, "error": f"{type(err).__name__}: {err}"}
        finally:
            if log:
                out.close()
        self.children[proc.pid] = proc
        return {"started": True, "pid": proc.pid}

    def op_alive(self, req: dict) -> dict:
        proc = self.children.get(int(req["pid"]))
        return {"alive": proc is not None and proc.poll() is None,
                "returncode": None if proc is None else proc.returncode}

    def op_kill(self, req: dict) -> dict:
        proc = self.children.pop(int(req["pid"]), None)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        return {"killed": proc is not None}

    # -- browser -----------------------------------------------------------------
    def op_browser(self, req: dict) -> dict:
        """Start the session's Chromium or run one page action on it (see gui.cdp)."""
        from ..tools.gui import cdp

        return cdp.handle(req, dict(self.env), self.workspace)

    # -- MCP servers -------------------------------------------------------------
    def op_mcp(self, req: dict) -> dict:
        """List the tools of, or call a tool on, one of the session's stdio MCP servers
        (children of this process, started on first use; see tools.mcp.host)."""
        from ..tools.mcp import host

        return host.handle(req, dict(self.env), self.workspace)

    # -- python kernel -----------------------------------------------------------
    def op_kernel_exec(self, req: dict) -> dict:
        from ..tools import kernel as k

        timeout = float(req["timeout"])
        with self.kernel_lock:
            restart_reason, error = self._ensure_kernel(k)
        if error:
            return {"status": "start_failed", "error": error, "restart_reason": restart_reason}
        handle = self.kernel
        try:
            res = k.execute(handle, str(req["code"]), timeout=timeout, setup=req.get("setup"),
                            interrupt_grace=float(self.kernel_config.get("interrupt_grace", 2)),
                            store_history=bool(req.get("store_history", True)),
                            max_bytes=int(req["max_output"]))
        except k.KernelError as err:
            if k.is_alive(handle):
                return {"status": "busy", "error": str(err), "restart_reason": restart_reason}
            self._lose_kernel(k, f"the kernel stopped answering ({err})")
            return {"status": "unreachable", "error": str(err), "restart_reason": restart_reason}
        if res.status == "died":
            self._lose_kernel(k, f"the kernel died during the previous call ({res.exit_info or 'exited'})")
        elif res.status == "timeout" and res.killed:
            self._lose_kernel(k, "the kernel was killed after a timeout (it ignored the interrupt)")
        data = res.to_data(int(req["max_output"]), int(self.kernel_config.get("max_images", 8)))
        return {"status": res.status, "data": data, "killed": res.killed, "exit_info": res.exit_info,
                "error_info": res.error, "restart_reason": restart_reason, "restarts": self.kernel_restarts}

    def _ensure_kernel(self, k) -> tuple[str | None, str | None]:
        """(why the kernel was restarted or None, why it could not start or None)."""
        if self.kernel is not None and k.is_alive(self.kernel):
            return None, None
        reason = None
        if self.kernel is not None or self.kernel_lost:
            reason = self.kernel_lost or "the previous kernel process was no longer running"
            if self.kernel is not None:
                k.kill_kernel(self.kernel)
        cfg = self.kernel_config
        try:
            handle = k.start_kernel(Path(self.workspace), env=dict(self.env), python=cfg.get("python"),
                                    startup_timeout=float(cfg.get("startup_timeout", 30)),
                                    files_dir=Path(cfg["files_dir"]) if cfg.get("files_dir") else None)
        except k.KernelError as err:
            return reason, f"the Python kernel did not start: {err}"
        startup = cfg.get("startup_code")
        if startup:
            res = k.execute(handle, startup, timeout=float(cfg.get("startup_timeout", 30)), store_history=False)
            if res.status != "ok":
                k.kill_kernel(handle)
                detail = (res.error or {}).get("evalue") or res.exit_info or res.status
                return reason, f"the kernel's startup code failed: {detail}"
        self.kernel, self.kernel_lost = handle, None
        if reason is not None:
            self.kernel_restarts += 1
        return reason, None

    def _lose_kernel(self, k, why: str) -> None:
        with self.kernel_lock:
            if self.kernel is not None:
                k.kill_kernel(self.kernel)
            self.kernel, self.kernel_lost = None, why

    def op_kernel_start(self, _req: dict) -> dict:
        from ..tools import kernel as k

        with self.kernel_lock:
            _, error = self._ensure_kernel(k)
        return {"started": error is None, "error": error}

    # -- files -------------------------------------------------------------------
    def op_copy_tree(self, req: dict) -> dict:
        src, dst, limit = Path(req["src"]), Path(req["dst"]), int(req["limit_bytes"])
        if dst.exists():
            return {"copied": True, "path": str(dst)}
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
        if total > limit:
            return {"copied": False, "reason": f"{total} bytes is over the copy limit"}
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, tmp, symlinks=True)
        try:
            os.rename(tmp, dst)
        except OSError:  # another call made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return {"copied": True, "path": str(dst)}


class _AfterReply(threading.local):
    """Work a request leaves for after its reply is sent (per connection thread)."""

    def __init__(self):
        self.tasks: list = []

    def append(self, task) -> None:
        self.tasks.append(task)

    def run(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            try:
                task()
            except Exception:  # noqa: BLE001 - the next call starts a shell itself
                pass


def _discard(shell: tuple[subprocess.Popen, int]) -> None:
    proc, state_read = shell
    _kill_group(proc)
    for fh in (proc.stdin, proc.stdout, proc.stderr):
        if fh is not None:
            fh.close()
    os.close(state_read)


def _run_to_end(proc: subprocess.Popen, timeout: float, cap: int) -> tuple[_Capture, _Capture, bool]:
    """Capture the program's output until it exits or ``timeout``; (stdout, stderr,
    timed out). Like a closing terminal, whatever it left in its process group ends with
    it (a fork bomb included); daemons must detach with `setsid`."""
    out, err = _Capture(cap), _Capture(cap)
    timed_out = not _pump(proc, {proc.stdout: out, proc.stderr: err}, timeout)
    _kill_group(proc)
    _drain_into(proc.stdout, out)
    _drain_into(proc.stderr, err)
    proc.stdout.close()
    proc.stderr.close()
    return out, err, timed_out


def _pump(proc: "subprocess.Popen | int | None", captures: dict, timeout: float) -> bool:
    """Read the command's pipes (file objects or descriptors) into ``captures`` until
    it exits (True) or the time runs out (False). ``proc``: the command, or a pidfd of
    it (None: it has already ended)."""
    deadline = time.monotonic() + timeout
    if proc is None:
        return True
    own = isinstance(proc, subprocess.Popen)
    pidfd = os.pidfd_open(proc.pid) if own else proc
    poller = select.poll()
    try:
        poller.register(pidfd, select.POLLIN)
        fds = {}
        for fh, cap in captures.items():
            fd = fh if isinstance(fh, int) else fh.fileno()
            fds[fd] = cap
            poller.register(fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    return True
                chunk = os.read(fd, 65536)
                if chunk:
                    fds[fd].add(chunk)
                else:
                    poller.unregister(fd)
    finally:
        if own:
            os.close(pidfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _kill_pgid(pgid: int, once: bool = False) -> None:
    """Kill a job's process group until nothing in it is left."""
    for i in range(200):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:  # ProcessLookupError: the group is empty
            return
        if once:
            return
        time.sleep(0.001 if i < 20 else 0.01)


def _drain_fd(fd: int, capture: _Capture) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        capture.add(chunk)


def _drain_into(fh, capture: _Capture) -> None:
    """What is left in a pipe, without waiting for writers a detached job may hold."""
    os.set_blocking(fh.fileno(), False)
    while True:
        try:
            chunk = os.read(fh.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        capture.add(chunk)


def _read_available(fd: int) -> bytes:
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


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command's process group until nothing in it is left (a fork bomb keeps
    forking while we kill)."""
    for _ in range(200):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _serve(sup: Supervisor, conn: socket.socket) -> None:
    """Answer the requests of one connection, one after the other, until the server
    closes it (it keeps a connection for its next request) or it breaks."""
    try:
        while True:
            try:
                request = read_frame(conn, _MAX_REQUEST)
            except Exception:  # noqa: BLE001 - closed, broken or garbage: that connection ends
                return
            try:
                conn.sendall(ACK)  # taken: from here on the server knows the request may have run
                try:
                    reply = sup.handle(request)
                except Exception as err:  # noqa: BLE001 - the server gets the reason, the supervisor lives on
                    reply = {"ok": False, "error": f"{type(err).__name__}: {err}",
                             "trace": traceback.format_exc()[-2000:]}
                write_frame(conn, reply)
            except Exception:  # noqa: BLE001 - a broken connection ends that call only
                return
            finally:
                sup.after_reply.run()
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    listen_fd, workspace = int(args[0]), args[1]
    listener = socket.socket(fileno=listen_fd)
    listener.set_inheritable(False)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sup = Supervisor(workspace)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(sup, conn), daemon=True).start()


if __name__ == "__main__":
    main()
