"""Private X11 helpers for the ``vm`` backend: headless displays that any process can reach.

A display is an ``Xvfb`` server plus the clients started on it (window manager,
terminal, apps). Everything is plain data in :class:`Display` (JSON-safe, stored in
the session state), so whichever server process serves a call can drive the display
with ``xdotool``/``wmctrl`` or grab it with Pillow, and any process can end it.

Every process started for a display carries ``AGENTFLOW_X11_MARKER=<token>`` in its
environment; children inherit it, so :func:`stop_display` finds and ends everything
the display ran — also programs the agent started from the terminal that left the
terminal's process group.

Access control: one ``MIT-MAGIC-COOKIE-1`` per data directory, in a wildcard
Xauthority file readable only by the server's user, guards every display. Local users
without the cookie (e.g. the per-session uids of the bash backend) cannot connect.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import signal
import struct
import subprocess
import time
from pathlib import Path

from .base import StateRecord

__all__ = ["Display", "X11Error", "ensure_cookie", "launch", "is_alive", "start_display", "stop_display",
           "run_x", "grab_png", "marker_pids"]

MARKER_VAR = "AGENTFLOW_X11_MARKER"
_DISPLAY_BASE = 200  # stay clear of :0 … and of displays people start by hand
_DISPLAY_SPAN = 800


class X11Error(Exception):
    """A display could not be started or reached. Retrying may help (e.g. a busy machine)."""


@dataclasses.dataclass
class Display(StateRecord):
    """A running display (JSON-safe)."""

    number: int
    width: int
    height: int
    auth: str
    """The Xauthority file with the cookie."""
    marker: str
    """Token in the environment of every process of this display."""
    run_dir: str
    """Logs of the display's processes."""
    pids: list = dataclasses.field(default_factory=list)
    """``[pid, start_ticks, name]`` of the processes started for this display."""
    watchdog: list | None = None
    """``[pid, start_ticks]`` of the pool watchdog, while the display waits in a pool."""
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return f":{self.number}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DISPLAY": self.name,
            "XAUTHORITY": self.auth,
            MARKER_VAR: self.marker,
        }
        env.update(extra)
        return env



# -- the cookie ----------------------------------------------------------------------
def _field(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def ensure_cookie(path: Path) -> str:
    """Create (once, atomically) the wildcard Xauthority file at ``path``; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        entry = (struct.pack(">H", 0xFFFF) + _field(b"") + _field(b"") + _field(b"MIT-MAGIC-COOKIE-1")
                 + _field(secrets.token_bytes(16)))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(entry)
        try:
            os.link(tmp, path)  # fails if another process won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return str(path)


# -- processes -------------------------------------------------------------------------
def _ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _same(pid: int, ticks: int) -> bool:
    return _ticks(pid) == ticks


def launch(display: Display, argv: list[str], *, name: str, cwd: str | None = None,
           env: dict[str, str] | None = None) -> int:
    """Start ``argv`` on the display in a session of its own; record and return its pid."""
    log = open(Path(display.run_dir) / f"{name}.log", "ab")
    try:
        proc = subprocess.Popen(argv, env=display.env(**(env or {})), cwd=cwd or display.run_dir,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    finally:
        log.close()
    display.pids.append([proc.pid, _ticks(proc.pid) or 0, name])
    _forget(proc)
    return proc.pid


_children: dict[int, subprocess.Popen] = {}


def _forget(proc: subprocess.Popen) -> None:
    """Display processes outlive the call (and may be ended by another server
    process); keep the handle so that :func:`_reap` can collect the zombie later."""
    _reap()
    _children[proc.pid] = proc


def _reap() -> None:
    """Collect exited display processes that this process started (only those: a
    ``waitpid(-1)`` would steal other backends' children)."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(pid, None)


def start_display(width: int, height: int, *, auth: str, run_dir: Path, depth: int = 24,
                  timeout: float = 15.0) -> Display:
    """Start an ``Xvfb`` at ``width``×``height`` on a free display number.

    Raises:
        X11Error: no server came up within ``timeout`` (its log is quoted).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = secrets.token_hex(12)
    deadline = time.monotonic() + timeout
    start = _DISPLAY_BASE + secrets.randbelow(_DISPLAY_SPAN)
    for attempt in range(40):
        number = _DISPLAY_BASE + (start - _DISPLAY_BASE + attempt) % _DISPLAY_SPAN
        if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
            continue
        display = Display(number, width, height, auth, marker, str(run_dir), started_at=time.time())
        read_fd, write_fd = os.pipe()
        log = open(run_dir / "xvfb.log", "wb")
        try:
            proc = subprocess.Popen(
                ["Xvfb", display.name, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x{depth}",
                 "-nolisten", "tcp", "-auth", auth, "-noreset"],
                env=display.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), start_new_session=True,
            )
        except FileNotFoundError:
            raise X11Error("Xvfb is not installed (Debian package 'xvfb')") from None
        finally:
            os.close(write_fd)
            log.close()
        ok = _wait_ready(read_fd, proc, deadline)
        os.close(read_fd)
        if ok:
            display.pids.append([proc.pid, _ticks(proc.pid) or 0, "Xvfb"])
            _forget(proc)
            return display
        if proc.poll() is None:  # timed out
            proc.kill()
            proc.wait()
            raise X11Error(f"Xvfb did not start within {timeout:g} s: {_tail(run_dir / 'xvfb.log')}")
        text = _tail(run_dir / "xvfb.log")
        if "already active" not in text and "server is already" not in text.lower():
            raise X11Error(f"Xvfb exited with code {proc.returncode}: {text}")
        # lost a race for this number: try the next one
    raise X11Error("no free X display number found")


def _wait_ready(fd: int, proc: subprocess.Popen, deadline: float) -> bool:
    import select

    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], min(0.2, max(0.0, deadline - time.monotonic())))
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                return False
            buf += chunk
            if buf.endswith(b"\n"):
                return True
        elif proc.poll() is not None:
            return False
    return False


def _tail(path: Path, size: int = 600) -> str:
    try:
        return path.read_bytes()[-size:].decode("utf-8", "replace").strip() or "(no output)"
    except OSError:
        return "(no log)"


def is_alive(display: Display) -> bool:
    """True while the display's X server runs."""
    return any(name == "Xvfb" and _same(pid, ticks) for pid, ticks, name in display.pids)


def marker_pids(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return [p for p in found if _ticks(p) is not None]


def stop_display(display: Display, grace: float = 1.0) -> None:
    """End every process of the display (TERM, then KILL after ``grace`` seconds)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = set(marker_pids(display.marker))
        targets.update(pid for pid, ticks, _ in display.pids if _same(pid, ticks))
        if display.watchdog and _same(*display.watchdog):
            targets.add(display.watchdog[0])
        targets.discard(os.getpid())
        if not targets:
            break
        for pid in targets:
            try:
                os.kill(pid, sig)
            except OSError as err:
                if err.errno != errno.ESRCH:
                    raise
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 3.0)
        while time.monotonic() < deadline:
            _reap()
            if not any(_ticks(p) is not None for p in targets):
                break
            time.sleep(0.02)
    _reap()
    for stale in (f"/tmp/.X{display.number}-lock", f"/tmp/.X11-unix/X{display.number}"):
        if not any(name == "Xvfb" and _same(pid, ticks) for pid, ticks, name in display.pids):
            try:
                os.unlink(stale)
            except OSError:
                pass


def run_x(display: Display, argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run a short X client (xdotool, wmctrl) against the display and wait for it.

    Raises:
        X11Error: the command is missing or did not finish within ``timeout``.
    """
    try:
        return subprocess.run(argv, env=display.env(), capture_output=True, text=True, timeout=max(timeout, 0.1),
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise X11Error(f"'{argv[0]}' is not installed") from None
    except subprocess.TimeoutExpired:
        raise X11Error(f"'{argv[0]}' did not finish within {timeout:g} s") from None


def grab_png(display: Display, compress_level: int = 6) -> bytes:
    """The whole screen as PNG bytes (Pillow over XCB; needs ``XAUTHORITY`` = the cookie
    file in this process's environment, which the vm backend sets at start)."""
    import io

    from PIL import ImageGrab

    try:
        image = ImageGrab.grab(xdisplay=display.name)
    except OSError as err:
        raise X11Error(f"cannot grab display {display.name}: {err}") from None
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()
