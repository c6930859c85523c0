"""Detached IPython kernels that any server process can reach.

A kernel is a separate OS process (``ipykernel``) started in its own process group and
session, talking ZeroMQ over IPC sockets whose connection file lives in the session
workspace. Whatever gunicorn worker serves a call reconnects through that file with a
``BlockingKernelClient`` (cached per process), so nothing about the kernel lives in one
worker's memory: :class:`KernelHandle` is plain data, stored in the session state.

A dead kernel never answers; it just goes quiet. :func:`execute` therefore checks the
kernel's PID (and its start time, against PID reuse) whenever the kernel is silent.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from .base import StateRecord

log = logging.getLogger(__name__)

__all__ = ["ExecResult", "KernelError", "KernelHandle", "close_clients", "execute", "is_alive", "kill_kernel",
           "start_kernel"]

_KERNEL_DIR = ".kernel"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; zmq appends "-<port>"
_POLL_SLICE = 0.2  # seconds of silence between liveness checks
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CLIENT_CACHE_SIZE = 32

# Runs as ``python -c``: resource limits first, then the stock kernel app.
_LAUNCHER = """\
import os, resource, sys
mem = int(os.environ.pop("AF_KERNEL_MEMORY_MB", "0") or 0)
if mem > 0:
    resource.setrlimit(resource.RLIMIT_AS, (mem << 20, mem << 20))
nproc = int(os.environ.pop("AF_KERNEL_NPROC", "0") or 0)
if nproc > 0:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
try:  # a flush with nothing buffered is a no-op, not a round trip to the IO thread (4 per cell)
    from ipykernel import iostream as _io
    _flush = _io.OutStream.flush
    def _cheap_flush(self, _flush=_flush):
        if self._buffers or self._flush_pending or self.echo is not None:
            _flush(self)
    _io.OutStream.flush = _cheap_flush
    del _io, _flush, _cheap_flush
except Exception:
    pass
try:  # no execute_input message on IOPub (one message less per cell): our client takes the
    # execution count from the execute reply
    from ipykernel.kernelbase import Kernel as _Kernel
    _Kernel._publish_execute_input = lambda self, *args, **kwargs: None
    del _Kernel
except Exception:
    pass
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


class KernelError(Exception):
    """The kernel could not be started or reached. Retrying may help after a restart."""


@dataclasses.dataclass
class KernelHandle(StateRecord):
    """Everything needed to reach or end a kernel from any process (JSON-safe)."""

    connection_file: str
    pid: int
    start_ticks: int
    """Process start time from ``/proc/<pid>/stat``: tells our kernel from a reused PID."""
    socket_dir: str | None = None
    """A short directory outside the workspace holding the IPC sockets, when the
    workspace path is too long for a unix socket; removed with the kernel."""
    started_at: float = 0.0



@dataclasses.dataclass
class ExecResult:
    """What one execution produced. ``status``: ok, error, timeout or died."""

    status: str
    stdout: list[str] = dataclasses.field(default_factory=list)
    stderr: list[str] = dataclasses.field(default_factory=list)
    result: str | None = None
    displays: list[str] = dataclasses.field(default_factory=list)
    images: list[dict] = dataclasses.field(default_factory=list)
    error: dict | None = None
    execution_count: int | None = None
    interrupted: bool = False
    killed: bool = False
    exit_info: str | None = None
    stream_limit: int = 0
    """Keep at most this many bytes of each stream (0: all); the sizes still count."""
    stream_bytes: dict = dataclasses.field(default_factory=lambda: {"stdout": 0, "stderr": 0})

    def add_stream(self, name: str, text: str) -> None:
        """Append output, capped while it streams: a kernel printing 300 MiB costs the
        reader ``stream_limit`` bytes, not 300 MiB."""
        size = len(text.encode("utf-8", "replace"))
        kept = self.stream_bytes[name]
        self.stream_bytes[name] = kept + size
        if self.stream_limit and kept >= self.stream_limit:
            return
        (self.stderr if name == "stderr" else self.stdout).append(text)

    def to_data(self, max_output_bytes: int, max_images: int) -> dict:
        """The JSON answer of a tool: text capped at ``max_output_bytes`` each.

        ``value`` is the last expression's value (None when the code ends in a
        statement); ``result`` is what a notebook cell shows a reader: that value, or
        else the printed output, followed by the traceback when the code raised.
        """
        data: dict = {}
        for name, chunks in (("stdout", self.stdout), ("stderr", self.stderr)):
            data.update(cap_text(name, "".join(chunks), max_output_bytes))
            if self.stream_bytes[name] > data[f"{name}_bytes"]:  # dropped while streaming
                data[f"{name}_bytes"], data[f"{name}_truncated"] = self.stream_bytes[name], True
        if self.result is not None:
            data.update(cap_text("value", self.result, max_output_bytes))
            shown = self.result
        else:
            data["value"] = None
            shown = "".join(self.stdout)
            if self.error is not None:
                trace = self.error.get("traceback") or f"{self.error.get('ename', '')}: {self.error.get('evalue', '')}"
                shown = (shown + ("\n" if shown and not shown.endswith("\n") else "") + trace) if shown else trace
        data.update(cap_text("result", shown, max_output_bytes))
        if self.displays:
            data["display"] = [cap_text("text", d, max_output_bytes)["text"] for d in self.displays]
        data["images"] = self.images[:max_images]
        if len(self.images) > max_images:
            data["images_dropped"] = len(self.images) - max_images
        if self.error is not None:
            err = dict(self.error)
            err["traceback"] = cap_text("t", err.get("traceback", ""), max_output_bytes)["t"]
            data["error"] = err
        data["execution_count"] = self.execution_count
        return data


def cap_text(name: str, text: str, cap: int) -> dict:
    """``{name, name_bytes, name_truncated}`` with the text cut at ``cap`` UTF-8 bytes."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= cap:
        return {name: text, f"{name}_bytes": len(raw), f"{name}_truncated": False}
    return {name: raw[:cap].decode("utf-8", "ignore"), f"{name}_bytes": len(raw), f"{name}_truncated": True}


# -- process identity ----------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'
    return raw[raw.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


_children: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> str | None:
    """Collect the exit status if the kernel is this process's child; describe it."""
    proc = _children.get(pid)
    if proc is None or proc.poll() is None:
        return None
    del _children[pid]
    code = proc.returncode
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


def is_alive(handle: KernelHandle) -> bool:
    """True when the kernel process still runs (not a zombie, not a reused PID)."""
    fields = _stat(handle.pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return int(fields[19]) == handle.start_ticks


# -- start / stop ----------------------------------------------------------------------
def start_kernel(workspace: Path, *, env: dict[str, str], python: str | None = None, memory_mb: int = 0,
                 startup_timeout: float = 30.0, wait: bool = True, user: int | None = None,
                 max_processes: int = 0, files_dir: Path | None = None) -> KernelHandle:
    """Start a detached kernel with ``workspace`` as its cwd.

    Args:
        workspace: the session folder; gets ``.kernel/`` with the connection file and log.
        env: the kernel's whole environment (nothing is inherited from the server).
        python: interpreter with ipykernel (default: the server's).
        memory_mb: address-space limit of the kernel (0: none).
        startup_timeout: seconds to wait for the kernel to answer.
        wait: wait until the kernel answers before returning.
        user: run the kernel under this uid (and gid); the server must be root. The
            workspace and kernel files are handed to that user.
        max_processes: process-count limit of ``user`` (needs ``user``).
        files_dir: where the connection file, sockets and log go (default
            ``workspace/.kernel``); a confined session keeps them in its private /tmp.

    Raises:
        KernelError: the kernel exited or did not answer in time (its log is quoted).
    """
    kdir = Path(files_dir) if files_dir is not None else Path(workspace) / _KERNEL_DIR
    kdir.mkdir(parents=True, exist_ok=True)
    socket_dir = None
    prefix = kdir / "k"
    if len(str(prefix)) > _MAX_SOCKET_PATH:
        socket_dir = tempfile.mkdtemp(prefix="af-k-")
        prefix = Path(socket_dir) / "k"
    conn_file = str(kdir / "kernel.json")
    write_connection_file(conn_file, ip=str(prefix), transport="ipc")
    log_path = kdir / "kernel.log"
    log_path.touch()
    if user is not None:
        for path in (workspace, kdir, conn_file, log_path, socket_dir):
            if path:
                os.chown(path, user, user)
        os.chmod(workspace, 0o700)
    full_env = {**env, "AF_KERNEL_MEMORY_MB": str(int(memory_mb or 0)),
                "AF_KERNEL_NPROC": str(int(max_processes or 0) if user is not None else 0)}
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            [python or sys.executable, "-c", _LAUNCHER, "-f", conn_file,
             "--HistoryManager.enabled=False", "--IPKernelApp.quiet=True",
             # the reply waits 0.5 ms by default "so that output makes it to clients"; ours
             # waits for the idle status on IOPub, which follows every output of the cell
             "--Kernel._execute_sleep=0"],
            cwd=workspace, env=full_env, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            **({"user": user, "group": user, "extra_groups": []} if user is not None else {}),
        )
    ticks = _start_ticks(proc.pid)
    if ticks is None:  # exited at once
        proc.wait()
        raise KernelError(f"kernel exited at start (code {proc.returncode}): {_tail(log_path)}")
    _children[proc.pid] = proc  # this process reaps it; other processes go by PID
    handle = KernelHandle(conn_file, proc.pid, ticks, socket_dir, time.time())
    if wait:
        try:
            _client_for(handle, deadline=time.monotonic() + startup_timeout)
        except KernelError as err:
            kill_kernel(handle)
            raise KernelError(f"{err}; kernel log: {_tail(log_path)}") from None
    return handle


def kill_kernel(handle: KernelHandle) -> None:
    """End the kernel, its process group and every process of its session."""
    _drop_client(handle.connection_file)
    if is_alive(handle):
        try:
            os.killpg(handle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(handle.pid, signal.SIGKILL)
    _kill_session_members(handle.pid)
    proc = _children.pop(handle.pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("kernel %s did not exit after SIGKILL", handle.pid)
    if handle.socket_dir:
        shutil.rmtree(handle.socket_dir, ignore_errors=True)


def _kill_session_members(sid: int) -> None:
    """Processes that left the kernel's group with setpgid still carry its session id."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields and len(fields) > 3 and fields[3] == str(sid):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:].strip() or "(empty log)"


# -- clients (one per kernel per process) -----------------------------------------------
class _Client:
    def __init__(self, kc: BlockingKernelClient):
        self.kc = kc
        self.lock = threading.Lock()
        self.retired = False
        """Dropped from the cache while in use: the user closes it when done."""


_clients: OrderedDict[str, _Client] = OrderedDict()
_clients_lock = threading.Lock()


def _client_for(handle: KernelHandle, deadline: float) -> _Client:
    """A connected client whose IOPub subscription is known to be live."""
    key = f"{handle.connection_file}:{handle.pid}"
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
    kc = BlockingKernelClient(connection_file=handle.connection_file)
    try:
        kc.load_connection_file()
    except OSError as err:
        raise KernelError(f"kernel connection file is unreadable: {err}") from None
    kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
    try:
        _wait_subscribed(kc, handle, deadline)
    except BaseException:
        kc.stop_channels()
        raise
    client = _Client(kc)
    with _clients_lock:
        _clients[key] = client
        evicted = [_clients.popitem(last=False)[1] for _ in range(len(_clients) - _CLIENT_CACHE_SIZE)]
    for old in evicted:
        _close(old)
    return client


def _wait_subscribed(kc: BlockingKernelClient, handle: KernelHandle, deadline: float) -> None:
    """Send kernel_info until its status message shows up on IOPub (the subscription
    is asynchronous: anything published before it is in place would be lost)."""
    while True:
        msg_id = kc.kernel_info()
        retry_at = time.monotonic() + 0.5
        while time.monotonic() < min(retry_at, deadline):
            try:
                msg = kc.iopub_channel.get_msg(timeout=min(_POLL_SLICE, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if not is_alive(handle):
                    raise KernelError(f"kernel process {handle.pid} is not running") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                _drain(kc, 0)
                return
        if time.monotonic() >= deadline:
            raise KernelError("kernel did not answer in time")


def _drain(kc: BlockingKernelClient, timeout: float) -> None:
    """Throw away replies left on the shell channel by earlier calls."""
    while True:
        try:
            kc.shell_channel.get_msg(timeout=timeout)
        except queue.Empty:
            return


def close_clients() -> None:
    """Close this process's connections to kernels (the kernels keep running)."""
    with _clients_lock:
        dropped = list(_clients.values())
        _clients.clear()
    for client in dropped:
        _close(client)


def _drop_client(connection_file: str) -> None:
    with _clients_lock:
        dropped = [_clients.pop(k) for k in [k for k in _clients if k.startswith(connection_file + ":")]]
    for client in dropped:
        _close(client)


def _close(client: _Client) -> None:
    # A thread still inside execute() owns the sockets: it closes them when it is done.
    client.retired = True
    if client.lock.acquire(blocking=False):
        try:
            client.kc.stop_channels()
        finally:
            client.lock.release()


# -- execute ---------------------------------------------------------------------------
def execute(handle: KernelHandle, code: str, *, timeout: float, setup: str | None = None,
            interrupt_grace: float = 2.0, store_history: bool = True, max_bytes: int = 0) -> ExecResult:
    """Run ``code`` in the kernel and collect its output.

    Args:
        setup: code run silently just before (same round trip), e.g. a ``chdir``.
        timeout: seconds for the code; then the kernel gets SIGINT and
            ``interrupt_grace`` seconds to stop, after which it is killed.

    Returns:
        An :class:`ExecResult` whose ``status`` is ``ok``, ``error`` (the code raised),
        ``timeout`` (partial output; ``killed`` when the interrupt did not work) or
        ``died`` (the kernel process is gone).

    Raises:
        KernelError: the kernel cannot be reached at all.
    """
    deadline = time.monotonic() + timeout
    if not is_alive(handle):
        return ExecResult(status="died", exit_info=_reap(handle.pid))
    client = _client_for(handle, deadline=max(deadline, time.monotonic() + 5.0))
    # One execution at a time per kernel: a second caller waits at most its own timeout.
    if not client.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise KernelError("the kernel is busy with another call")
    try:
        return _execute_locked(client.kc, handle, code, deadline, setup, interrupt_grace, store_history, max_bytes)
    finally:
        if client.retired:
            client.kc.stop_channels()
        client.lock.release()


def _execute_locked(kc: BlockingKernelClient, handle: KernelHandle, code: str, deadline: float,
                    setup: str | None, interrupt_grace: float, store_history: bool,
                    max_bytes: int = 0) -> ExecResult:
    if setup:
        kc.execute(setup, silent=True, store_history=False, allow_stdin=False)
    msg_id = kc.execute(code, store_history=store_history, allow_stdin=False, stop_on_error=False)
    res = ExecResult(status="ok", stream_limit=max_bytes)
    interrupted_at = None
    while True:
        now = time.monotonic()
        if interrupted_at is None and now >= deadline:
            interrupted_at = now
            res.interrupted = True
            _signal_group(handle, signal.SIGINT)
        if interrupted_at is not None and now >= interrupted_at + interrupt_grace:
            res.status, res.killed = "timeout", True
            kill_kernel(handle)
            return res
        limit = (interrupted_at + interrupt_grace) if interrupted_at is not None else deadline
        try:
            # the channel itself: the client's get_iopub_msg wraps it in an event loop run per message
            msg = kc.iopub_channel.get_msg(timeout=max(0.001, min(_POLL_SLICE, limit - now)))
        except queue.Empty:
            if not is_alive(handle):
                res.status, res.exit_info = "died", _reap(handle.pid)
                _drop_client(handle.connection_file)
                return res
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if _collect(res, msg):
            break
    if store_history:  # also keeps the shell channel from filling with unread replies
        count = _reply_count(kc, msg_id, min(1.0, max(0.05, deadline - time.monotonic())))
        res.execution_count = count if count is not None else res.execution_count
    if res.interrupted:
        res.status = "timeout"
    elif res.error is not None:
        res.status = "error"
    return res


def _reply_count(kc: BlockingKernelClient, msg_id: str, wait: float) -> int | None:
    """The execution count from the execute reply to ``msg_id`` (sent before the idle
    status that ended the cell, so it is there or about to be); earlier replies left on the
    shell channel are dropped on the way."""
    end = time.monotonic() + wait
    while True:
        try:
            msg = kc.shell_channel.get_msg(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            return None
        if msg["parent_header"].get("msg_id") == msg_id:
            count = msg["content"].get("execution_count")
            return count if isinstance(count, int) else None


def _collect(res: ExecResult, msg: dict) -> bool:
    """Add one IOPub message to the result; True when the execution is over."""
    kind, content = msg["msg_type"], msg["content"]
    if kind == "status":
        return content.get("execution_state") == "idle"
    if kind == "stream":
        res.add_stream("stderr" if content.get("name") == "stderr" else "stdout", content.get("text", ""))
    elif kind in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data", {})
        if kind == "execute_result":
            res.execution_count = content.get("execution_count")
        if "image/png" in data:
            res.images.append({"mime": "image/png", "data": _b64(data["image/png"])})
        elif kind == "execute_result":
            res.result = data.get("text/plain", "")
        elif "text/plain" in data:
            res.displays.append(data["text/plain"])
    elif kind == "execute_input":
        res.execution_count = content.get("execution_count")
    elif kind == "error":
        res.error = {
            "ename": content.get("ename", ""),
            "evalue": content.get("evalue", ""),
            "traceback": _ANSI.sub("", "\n".join(content.get("traceback", []))),
        }
    elif kind == "clear_output":
        res.stdout.clear()
        res.stderr.clear()
        res.stream_bytes = {"stdout": 0, "stderr": 0}
    return False


def _b64(value) -> str:
    return value if isinstance(value, str) else base64.b64encode(value).decode("ascii")


def _signal_group(handle: KernelHandle, sig: int) -> None:
    if not is_alive(handle):
        return
    try:
        os.killpg(handle.pid, sig)
    except OSError:
        try:
            os.kill(handle.pid, sig)
        except OSError:
            pass
