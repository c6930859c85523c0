"""``code:run``: Python in a per-session kernel process.

Each session owns one IPython kernel (see :mod:`.kernel`), started when the session is
created, inside the session's confinement as a child of its supervisor; any server
process reaches it through the supervisor's socket, and variables persist between calls.

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
import sys
from pathlib import Path

from ..isolation import Limits, SupervisorError, SupervisorTimeout
from .base import Backend, BackendConfigError, SessionFailed, SessionInfo, ToolContext, ToolError, ToolTimeout, tool

log = logging.getLogger(__name__)

_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_DEFAULTS = Limits(memory_mb=4096, max_processes=256, disk_mb=1024, file_size_mb=256, cpu_seconds=600)
_JAILED_KERNEL_FILES = "/tmp/.agentflow-kernel"  # the jail's private /tmp: short socket paths


class KernelBackend(Backend):
    """Session hooks shared by the backends that run code in a session kernel. The
    kernel lives inside the session's confinement, as a child of the session's
    supervisor (:mod:`agentflow.isolation.supervisor`), which talks to it and hands the
    server capped results."""

    config_keys = frozenset({"python", "startup_timeout", "interrupt_grace", "max_images", "env", "startup_code",
                             "memory_mb", "max_processes", "disk_mb", "file_size_mb", "cpu_seconds", "network",
                             "pool_size"})
    startup_code: str = ""

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.python = str(cfg.get("python") or sys.executable)
            self.startup_timeout = float(cfg.get("startup_timeout", 30))
            self.interrupt_grace = float(cfg.get("interrupt_grace", 2))
            self.max_images = int(cfg.get("max_images", 8))
        except (TypeError, ValueError) as err:
            raise BackendConfigError(f"resource '{self.name}': {err}") from None
        if not os.access(self.python, os.X_OK):
            raise BackendConfigError(f"resource '{self.name}': python '{self.python}' is not executable")
        installation = Path(os.path.realpath(self.python)).parent.parent
        self.confine = self.confinement(_DEFAULTS, extra_read_only=[installation])
        env = cfg.get("env") or {}
        if not isinstance(env, dict):
            raise BackendConfigError(f"resource '{self.name}': env must be an object of NAME: value")
        self.extra_env = {str(k): str(v) for k, v in env.items()}
        self.startup = "\n".join(c for c in (self.startup_code, cfg.get("startup_code", "")) if c)
        # Figures as PNG through the inline backend, when the kernel can load it.
        self.inline_plots = self.python != sys.executable or importlib.util.find_spec("matplotlib_inline") is not None
        # warm kernels (started confined, startup code run, never used) for new sessions
        self.pool = self.session_pool(self._start_warm)

    # -- sessions ----------------------------------------------------------------
    def _env(self, session: SessionInfo) -> dict[str, str]:
        private = _JAILED_KERNEL_FILES if self.confine.confined else str(Path(session.workspace) / ".kernel")
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(session.workspace),
            "TERM": "dumb",
            "IPYTHONDIR": f"{private}/ipython",
            "MPLCONFIGDIR": f"{private}/matplotlib",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        if self.inline_plots:
            env["MPLBACKEND"] = _INLINE_BACKEND
        env.update(self.extra_env)
        return env

    def create_session(self, session: SessionInfo) -> None:
        """A warm kernel from the node's pool (``pool_size``), else one started now."""
        if self.pool is not None:
            if self.pool.take(session):
                return
            session.workspace.mkdir(parents=True, exist_ok=True)
        self._start(session)

    def _start(self, session: SessionInfo) -> None:
        kernel = {"python": self.python, "startup_timeout": self.startup_timeout,
                  "interrupt_grace": self.interrupt_grace, "max_images": self.max_images,
                  "startup_code": self.startup,
                  "files_dir": _JAILED_KERNEL_FILES if self.confine.confined else None}
        try:
            supervisor = self.confine.start(session, self._env(session), kernel=kernel,
                                            startup_timeout=self.startup_timeout)
            reply = supervisor.request("kernel_start", 2 * self.startup_timeout)
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003
            self.confine.stop(session)
            raise SessionFailed(f"the Python kernel did not start: {err}") from None
        if not reply.get("started"):
            self.confine.stop(session)
            raise SessionFailed(str(reply.get("error") or "the Python kernel did not start"))

    def _start_warm(self, session: SessionInfo) -> None:
        """A pool entry: started, and one silent execution (no output, no history, no
        name added) so that IPython's first-run work is not paid by the first call."""
        self._start(session)
        reply = self.confine.attach(session, 1 << 20).request(
            "kernel_exec", 2 * self.startup_timeout, code="None", timeout=self.startup_timeout, max_output=1024,
            store_history=False)
        if reply.get("status") != "ok":
            self.confine.stop(session)
            raise SessionFailed(f"the pooled kernel did not run its first cell: {reply.get('status')}")

    def destroy_session(self, session: SessionInfo) -> None:
        self.confine.stop(session)

    # -- running code ------------------------------------------------------------
    def run_code(self, ctx: ToolContext, code: str, setup: str | None = None) -> dict:
        """Run ``code`` in the session kernel; the data dict or ToolError/ToolTimeout."""
        supervisor = self.confine.attach(ctx.session, max_reply_bytes=8 * ctx.max_output_bytes
                                         + self.max_images * (4 << 20) + 65536)
        try:
            reply = supervisor.request("kernel_exec", ctx.remaining + self.interrupt_grace + self.startup_timeout,
                                       code=code, setup=setup, timeout=ctx.remaining, max_output=ctx.max_output_bytes)
        except SupervisorTimeout:
            raise ToolTimeout(f"code timed out after {ctx.timeout:g} s and the session's sandbox did not answer",
                              {"kernel_restarted": False}) from None
        except SupervisorError as err:
            raise ToolError(f"the session's sandbox failed: {err}; destroy the session and create a new one",
                            {"sandbox_failed": True}) from None
        restart_reason = reply.get("restart_reason")
        restarted = {"kernel_restarted": restart_reason is not None}
        status = reply.get("status")
        if status == "start_failed":
            raise ToolError(f"the Python kernel could not be restarted: {reply.get('error')}",
                            {"kernel_restarted": False})
        if status == "busy":
            raise ToolTimeout(f"the Python kernel is busy and did not answer within the timeout "
                              f"({reply.get('error')}); its variables are kept", {"kernel_busy": True, **restarted})
        if status == "unreachable":
            raise ToolError(f"the Python kernel stopped answering: {reply.get('error')}; the next call starts a "
                            "fresh kernel", {"kernel_died": True, **restarted})
        data = dict(reply.get("data") or {})
        data.update(restarted)
        if restart_reason is not None:
            data["restart_reason"] = restart_reason + "; this is a fresh kernel: earlier variables are gone"
        self._raise_for(status, reply, data, ctx)
        return data

    def _raise_for(self, status: str, reply: dict, data: dict, ctx: ToolContext) -> None:
        if status == "died":
            how = reply.get("exit_info") or "exited"
            data["kernel_died"] = True
            raise ToolError(f"the Python kernel died while running the code ({how}); "
                            "the next call starts a fresh kernel and all variables are lost", data)
        if status == "timeout":
            data["interrupted"] = True
            if reply.get("killed"):
                data["kernel_killed"] = True
                raise ToolTimeout(f"code timed out after {ctx.timeout:g} s and ignored the interrupt, so the "
                                  "kernel was killed; the next call starts a fresh kernel", data)
            raise ToolTimeout(f"code timed out after {ctx.timeout:g} s and was interrupted; "
                              "the kernel and its variables are kept", data)
        if status == "error":
            err = reply.get("error_info") or {}
            raise ToolError(f"{err.get('ename', 'Error')}: {err.get('evalue', '')}", data)


class CodeBackend(KernelBackend):
    name = "code"
    description = "Python in a persistent per-session kernel"
    default_pool_size = 2

    @tool(
        "run",
        "Run Python code in your own persistent IPython kernel (working directory: your workspace). "
        "Variables, imports and functions persist between calls of your session. Returns stdout, "
        "stderr, 'result' (what a notebook cell shows: the value of the last expression, else the "
        "printed output), 'value' (the last expression's value, or null), the traceback if the code "
        "raises, and matplotlib figures as base64 PNG images. Shell commands work with "
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
