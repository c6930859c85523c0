"""``code:run``: Python in a per-session kernel process.

Each session owns one detached IPython kernel (see :mod:`.kernel`), started when the
session is created and recorded in ``session.state["kernel"]``, so any server process
can run code in it and variables persist between calls.

Failure policy:

- The code raises: 2001 with ``error`` (ename, evalue, traceback); the kernel lives on.
- Timeout: the kernel's process group gets SIGINT (KeyboardInterrupt in the code) and
  the call returns 2002 with the output so far; variables survive. If the code ignores
  the interrupt for ``interrupt_grace`` seconds, the kernel is killed instead.
- The kernel dies (``os._exit``, a segfault, the memory limit): that call returns 2001
  with ``kernel_died: true`` and the output so far. The *next* call starts a fresh
  kernel and says so with ``kernel_restarted: true`` and ``restart_reason`` — the
  restart is left to the next call so that the call that crashed reports exactly what
  happened and a session nobody uses again costs no new process.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import zlib
from pathlib import Path

from .base import Backend, BackendConfigError, SessionFailed, SessionInfo, ToolContext, ToolError, ToolTimeout, tool
from .bash import _UID_BASE, _UID_SPAN  # one uid scheme for every backend that runs user code
from .kernel import (ExecResult, KernelError, KernelHandle, close_clients, execute, is_alive, kill_kernel,
                     start_kernel)

log = logging.getLogger(__name__)

_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class KernelBackend(Backend):
    """Session hooks shared by the backends that run code in a session kernel."""

    config_keys = frozenset({"python", "memory_mb", "startup_timeout", "interrupt_grace", "max_images",
                             "env", "startup_code", "run_as", "max_processes"})
    startup_code: str = ""

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.python = str(cfg.get("python") or sys.executable)
            self.memory_mb = int(cfg.get("memory_mb", 4096))
            self.startup_timeout = float(cfg.get("startup_timeout", 30))
            self.interrupt_grace = float(cfg.get("interrupt_grace", 2))
            self.max_images = int(cfg.get("max_images", 8))
            self.max_processes = int(cfg.get("max_processes", 256))
        except (TypeError, ValueError) as err:
            raise BackendConfigError(f"resource '{self.name}': {err}") from None
        usable = _usable_by_others(self.python)
        default = "session" if os.geteuid() == 0 and usable else "server"
        if os.geteuid() == 0 and not usable and "run_as" not in cfg:
            log.warning("resource '%s': kernels run as the server's user: %s is not usable by other users",
                        self.name, self.python)
        self.run_as = cfg.get("run_as", default)
        if self.run_as not in ("session", "server"):
            raise BackendConfigError(f"resource '{self.name}': run_as must be 'session' or 'server'")
        if self.run_as == "session" and os.geteuid() != 0:
            raise BackendConfigError(f"resource '{self.name}': run_as 'session' needs the server to run as root")
        if self.run_as == "session" and not usable:
            raise BackendConfigError(f"resource '{self.name}': run_as 'session' needs a Python that other users "
                                     f"can run; {self.python} (or its installation) is closed to them")
        if not os.access(self.python, os.X_OK):
            raise BackendConfigError(f"resource '{self.name}': python '{self.python}' is not executable")
        self.extra_env = {str(k): str(v) for k, v in (cfg.get("env") or {}).items()}
        self.startup = "\n".join(c for c in (self.startup_code, cfg.get("startup_code", "")) if c)
        # Figures as PNG through the inline backend, when the kernel can load it.
        self.inline_plots = self.python != sys.executable or importlib.util.find_spec("matplotlib_inline") is not None

    # -- sessions ----------------------------------------------------------------
    def _uid(self, session: SessionInfo) -> int | None:
        """The session's own uid when the server is root (the bash backend's scheme)."""
        if self.run_as != "session":
            return None
        return _UID_BASE + zlib.crc32(session.session_id.encode()) % _UID_SPAN

    def _env(self, session: SessionInfo, uid: int | None) -> dict[str, str]:
        if uid is None:
            cache = Path(self.context.data_dir) / "cache"
            ipython = cache / "ipython"
        else:  # reachable by every session uid (the data dir may be closed to them)
            cache = Path(session.workspace).parent / ".kernel-cache"
            ipython = Path(session.workspace) / ".kernel" / "ipython"
        mpl = cache / "matplotlib"  # font cache built once, not per session
        if not mpl.is_dir():
            mpl.mkdir(parents=True, exist_ok=True)
            if uid is not None:
                os.chmod(cache, 0o1777)
                os.chmod(mpl, 0o1777)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(session.workspace),
            "TERM": "dumb",
            "IPYTHONDIR": str(ipython),
            "MPLCONFIGDIR": str(mpl),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        if self.inline_plots:
            env["MPLBACKEND"] = _INLINE_BACKEND
        env.update(self.extra_env)
        return env

    def _start(self, session: SessionInfo) -> KernelHandle:
        uid = self._uid(session)
        handle = start_kernel(session.workspace, env=self._env(session, uid), python=self.python,
                              memory_mb=self.memory_mb, startup_timeout=self.startup_timeout, user=uid,
                              max_processes=self.max_processes)
        session.state["kernel"] = handle.to_state()
        session.state["uid"] = uid
        if self.startup:  # queued now, finished before the first call's code runs
            try:
                res = execute(handle, self.startup, timeout=self.startup_timeout, store_history=False)
            except KernelError as err:
                res = ExecResult(status="died", exit_info=str(err))
            if res.status != "ok":
                kill_kernel(handle)
                detail = (res.error or {}).get("evalue") or res.exit_info or res.status
                raise KernelError(f"the kernel's startup code failed: {detail}")
        return handle

    def create_session(self, session: SessionInfo) -> None:
        try:
            self._start(session)
        except KernelError as err:
            raise SessionFailed(f"the Python kernel did not start: {err}") from None

    def destroy_session(self, session: SessionInfo) -> None:
        handle = KernelHandle.from_state(session.state.get("kernel"))
        if handle is not None:
            kill_kernel(handle)
        uid = session.state.get("uid")
        if uid:  # anything the code started in a session of its own
            subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def close(self) -> None:
        close_clients()

    # -- running code ------------------------------------------------------------
    def _kernel(self, session: SessionInfo) -> tuple[KernelHandle, str | None]:
        """The session's kernel, started afresh when the old one is gone."""
        handle = KernelHandle.from_state(session.state.get("kernel"))
        if handle is not None and is_alive(handle):
            return handle, None
        reason = session.state.get("kernel_lost") or "the previous kernel process was no longer running"
        if handle is not None:
            kill_kernel(handle)  # sockets and stray children
        try:
            handle = self._start(session)
        except KernelError as err:
            raise ToolError(f"the Python kernel could not be restarted: {err}", {"kernel_restarted": False}) from None
        session.state.pop("kernel_lost", None)
        session.state["restarts"] = session.state.get("restarts", 0) + 1
        return handle, reason

    def run_code(self, ctx: ToolContext, code: str, setup: str | None = None) -> dict:
        """Run ``code`` in the session kernel; the data dict or ToolError/ToolTimeout."""
        session = ctx.session
        handle, restart_reason = self._kernel(session)
        try:
            res = execute(handle, code, timeout=ctx.remaining, setup=setup,
                          interrupt_grace=self.interrupt_grace)
        except KernelError as err:
            if is_alive(handle):  # busy with another call (e.g. from another worker): leave it be
                raise ToolTimeout(f"the Python kernel is busy and did not answer within the timeout ({err}); "
                                  "its variables are kept", {"kernel_busy": True,
                                                             "kernel_restarted": restart_reason is not None}) from None
            session.state["kernel_lost"] = f"the kernel stopped answering ({err})"
            kill_kernel(handle)
            raise ToolError(f"the Python kernel stopped answering: {err}; the next call starts a fresh kernel",
                            {"kernel_died": True, "kernel_restarted": restart_reason is not None}) from None
        data = res.to_data(ctx.max_output_bytes, self.max_images)
        data["kernel_restarted"] = restart_reason is not None
        if restart_reason is not None:
            data["restart_reason"] = restart_reason + "; this is a fresh kernel: earlier variables are gone"
        self._raise_for(res, data, ctx, session)
        return data

    def _raise_for(self, res: ExecResult, data: dict, ctx: ToolContext, session: SessionInfo) -> None:
        if res.status == "died":
            how = res.exit_info or "exited"
            session.state["kernel_lost"] = f"the kernel died during the previous call ({how})"
            data["kernel_died"] = True
            raise ToolError(f"the Python kernel died while running the code ({how}); "
                            "the next call starts a fresh kernel and all variables are lost", data)
        if res.status == "timeout":
            data["interrupted"] = True
            if res.killed:
                session.state["kernel_lost"] = "the kernel was killed after a timeout (it ignored the interrupt)"
                data["kernel_killed"] = True
                raise ToolTimeout(f"code timed out after {ctx.timeout:g} s and ignored the interrupt, so the "
                                  "kernel was killed; the next call starts a fresh kernel", data)
            raise ToolTimeout(f"code timed out after {ctx.timeout:g} s and was interrupted; "
                              "the kernel and its variables are kept", data)
        if res.status == "error":
            err = res.error or {}
            raise ToolError(f"{err.get('ename', 'Error')}: {err.get('evalue', '')}", data)


def _usable_by_others(python: str) -> bool:
    """Whether a user other than the owner can run ``python`` and read its installation."""
    real = Path(os.path.realpath(python))
    prefix = Path(sys.base_prefix if python == sys.executable else real.parent.parent)
    for path in (real, prefix):
        for part in [path, *path.parents]:
            try:
                if not os.stat(part).st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


class CodeBackend(KernelBackend):
    name = "code"
    description = "Python in a persistent per-session kernel"

    @tool(
        "run",
        "Run Python code in your own persistent IPython kernel (working directory: your workspace). "
        "Variables, imports and functions persist between calls of your session. Returns stdout, "
        "stderr, 'result' (the value of the last expression, like a notebook cell), the traceback "
        "if the code raises, and matplotlib figures as base64 PNG images. Shell commands work with "
        "'!cmd'. Output is cut at a size limit (the full size is reported).",
        {
            "properties": {
                "code": {"type": "string", "minLength": 1, "description": "Python source to run."},
                "timeout": {"type": "number", "exclusiveMinimum": 0,
                            "description": "Seconds before the code is interrupted (default 60)."},
            },
            "required": ["code"],
        },
        default_timeout=60,
        max_timeout=3600,
    )
    def run(self, ctx: ToolContext, code: str) -> dict:
        return self.run_code(ctx, code)
