"""``bash:run``: shell commands in the session workspace, inside the session's jail.

Each session has a supervisor inside its confinement (:mod:`agentflow.isolation`); a
call is one shell that the supervisor forks from the session's warm forking shell (a
process group of its own, killed whole on timeout) and starts in the saved working
directory with the saved exports, so ``cd`` and ``export`` persist across calls while
no command's shell outlives its call (``$$`` is the forking shell's pid, ``$BASHPID``
the command's). The server never touches the workspace: it sends the command over the
session's socket (a connection it keeps for the next call) and gets back output that
was capped while it streamed.
"""
from __future__ import annotations

import signal

from ..isolation import Limits, SupervisorError, SupervisorGone, SupervisorTimeout
from .base import Backend, BackendConfigError, SessionFailed, SessionInfo, ToolContext, ToolError, ToolTimeout, tool

_DEFAULTS = Limits(memory_mb=2048, max_processes=256, disk_mb=1024, file_size_mb=256, cpu_seconds=600)


class BashBackend(Backend):
    name = "bash"
    description = "Shell commands in a per-session workspace"
    config_keys = frozenset({"cpu_seconds", "memory_mb", "file_size_mb", "max_processes", "disk_mb", "network",
                             "default_timeout", "env", "pool_size"})
    default_pool_size = 2

    def check_config(self) -> None:
        super().check_config()
        self.confine = self.confinement(_DEFAULTS)
        env = self.config.get("env") or {}
        if not isinstance(env, dict):
            raise BackendConfigError("resource 'bash': env must be an object of NAME: value")
        self.extra_env = {str(k): str(v) for k, v in env.items()}
        self.pool = self.session_pool(self._start_warm)

    # -- sessions ----------------------------------------------------------------
    def _env(self, session: SessionInfo) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(session.workspace), "LANG": "C.UTF-8",
                "TERM": "dumb", **self.extra_env}

    def create_session(self, session: SessionInfo) -> None:
        """A temporary session (a call without one) takes a warm jail from the node's pool
        (``pool_size``) when one is ready; any other session is started now."""
        if self.pool is not None and session.temporary:
            if self.pool.take(session):
                return
        session.workspace.mkdir(parents=True, exist_ok=True)
        self._start(session)

    def _start(self, session: SessionInfo) -> None:
        try:
            self.confine.start(session, self._env(session))
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003
            raise SessionFailed(str(err)) from None

    def _start_warm(self, session: SessionInfo) -> None:
        """A pool entry: started, and one command run so that its supervisor holds a
        warm spare shell for the first call of whoever takes it."""
        self._start(session)
        self.confine.attach(session, 65536).request("bash", 30, command="true", timeout=30, max_output=1024)

    def _restart(self, session: SessionInfo):
        try:
            return self.confine.restart(session, self._env(session))
        except Exception as err:  # noqa: BLE001 - the call fails, the session may be destroyed
            raise ToolError(f"the session's sandbox is gone and could not be restarted: {err}",
                            {"sandbox_failed": True}) from None

    def destroy_session(self, session: SessionInfo) -> None:
        self.confine.stop(session)

    # -- the tool ----------------------------------------------------------------
    @tool(
        "run",
        "Run a bash command in your workspace and return its stdout, stderr and exit code "
        "(exit_code, also as return_code). "
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
        supervisor = self.confine.attach(ctx.session, max_reply_bytes=4 * ctx.max_output_bytes + 65536)
        restarted = False
        try:
            try:
                reply = supervisor.request("bash", ctx.remaining, command=command, timeout=ctx.remaining,
                                           max_output=ctx.max_output_bytes)
            except SupervisorGone:  # an earlier command killed it; this one never ran
                supervisor = self._restart(ctx.session)
                restarted = True
                reply = supervisor.request("bash", ctx.remaining, command=command, timeout=ctx.remaining,
                                           max_output=ctx.max_output_bytes)
        except SupervisorTimeout:
            raise ToolTimeout(f"command timed out after {ctx.timeout:g} s and its sandbox did not answer", {}) from None
        except SupervisorError as err:
            raise ToolError(f"the session's sandbox ended during the command ({err}), e.g. because the command "
                            "killed every process of the session; the next call starts it again",
                            {"sandbox_failed": True}) from None
        result = {k: reply[k] for k in ("stdout", "stdout_bytes", "stdout_truncated", "stderr", "stderr_bytes",
                                        "stderr_truncated", "exit_code", "duration_ms", "signal") if k in reply}
        if "exit_code" in result:
            result["return_code"] = result["exit_code"]  # the name AgentFlow's reference callers read
        if restarted:
            result["sandbox_restarted"] = True  # working directory and exports were reset
        if reply.get("timed_out"):
            raise ToolTimeout(f"command timed out after {ctx.timeout:g} s; its processes were killed", result)
        if result.get("exit_code") in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
            raise ToolError("command was stopped for writing a file over the size limit", result)
        return result
