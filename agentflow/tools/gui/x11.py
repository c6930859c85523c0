"""X11 desktops inside a session's jail, driven through the session's supervisor.

Xvfb, the window manager, the terminal and every program opened on the desktop are
children of the session's supervisor (op ``spawn``): they run as the session's uid in
the session's namespaces and cgroup, and end with it. The server never connects to a
display itself: ``xdotool``, ``wmctrl`` and the screenshot grabber run inside too (op
``exec``), and a screenshot comes back as base64 text in the supervisor's reply.

Who can reach a display: its socket is ``/tmp/.X11-unix/X0`` in the jail's private
``/tmp``; the abstract-namespace socket is switched off (``-nolisten local``) because a
jail with network "full" shares the host's network namespace, where abstract sockets
live; and a per-session MIT cookie (in the jail's ``/tmp``) guards it as well. Every
process started for a display also carries ``AGENTFLOW_X11_MARKER`` in its environment,
so an operator (or a test) can find them from the host.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import sys
import time

from ...isolation import ConfinedSession, SupervisorError, SupervisorTimeout
from ..base import StateRecord

__all__ = ["Desktop", "Display", "X11Error", "X11Timeout", "XResult", "marker_pids", "start_desktop",
           "MARKER_VAR"]

MARKER_VAR = "AGENTFLOW_X11_MARKER"
_NUMBER = 0  # every jail has a /tmp (and so a display namespace) of its own
_RUN_DIR = "/tmp/.agentflow-x11"  # inside the jail: cookie and logs
_MAX_SCREENSHOT = 48 << 20
# Waits inside the jail, so that a start costs one round trip, not one per poll:
# ``sh -c WAIT_SOCKET sh SOCKET PID TICKS LOCK`` — until the socket exists and the lock
# file names our server (on a shared /tmp another server may own that display), or the
# server died (gone, or a zombie its parent has not reaped yet).
_WAIT_SOCKET = ('i=0; until [ -S "$1" ] && [ "$(tr -d " " < "$4" 2>/dev/null)" = "$2" ]; do '
                's=$(cut -d" " -f3 "/proc/$2/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ] && exit 3; '
                'i=$((i+1)); [ "$i" -gt "$3" ] && exit 4; sleep 0.01; done')
# ``sh -c WAIT_COMMAND sh TICKS COMMAND...`` — until the command succeeds.
_WAIT_COMMAND = ('n=$1; shift; i=0; until "$@" >/dev/null 2>&1; do i=$((i+1)); [ "$i" -gt "$n" ] && exit 4; '
                 'sleep 0.02; done')
_GRAB = ("import base64,io,sys\nfrom PIL import ImageGrab\n"
         "image = ImageGrab.grab(xdisplay=sys.argv[1])\nbuf = io.BytesIO()\n"
         "image.convert('RGB').save(buf, 'PNG', compress_level=int(sys.argv[2]))\n"
         "sys.stdout.write(base64.b64encode(buf.getvalue()).decode('ascii'))\n")


class X11Error(Exception):
    """A display could not be started or reached."""


class X11Timeout(X11Error):
    """A program on the display (or the session's supervisor) did not finish in time."""


@dataclasses.dataclass
class Display(StateRecord):
    """A running display (JSON-safe; paths are inside the session's jail)."""

    number: int
    width: int
    height: int
    auth: str
    """The Xauthority file with the session's cookie (in the jail's /tmp)."""
    marker: str
    pids: list = dataclasses.field(default_factory=list)
    """``[pid, name]`` of the programs started for this display (pids of the jail)."""
    started_at: float = 0.0

    @property
    def name(self) -> str:
        return f":{self.number}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"DISPLAY": self.name, "XAUTHORITY": self.auth, MARKER_VAR: self.marker, **extra}


@dataclasses.dataclass
class XResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool


@dataclasses.dataclass
class Desktop:
    """A session's display and the supervisor that reaches it."""

    supervisor: ConfinedSession
    display: Display

    @property
    def width(self) -> int:
        return self.display.width

    @property
    def height(self) -> int:
        return self.display.height

    @property
    def run_dir(self) -> str:
        """Where the display's cookie and logs are (the cookie's folder)."""
        return self.display.auth.rsplit("/", 1)[0]

    def _request(self, op: str, wait: float, **payload) -> dict:
        try:
            return self.supervisor.request(op, wait, **payload)
        except SupervisorTimeout:
            raise X11Timeout(f"the session's sandbox did not answer within {wait:g} s") from None
        except SupervisorError as err:
            raise X11Error(f"the session's sandbox failed: {err}") from None

    def run(self, argv: list[str], timeout: float = 10.0, max_output: int = 1 << 20) -> XResult:
        """Run a short X client (xdotool, wmctrl) in the jail and wait for it.

        Raises:
            X11Error: the program is missing; X11Timeout: it did not finish in time.
        """
        timeout = max(timeout, 0.1)
        reply = self._request("exec", timeout, argv=argv, timeout=timeout, max_output=max_output,
                              env=self.display.env())
        if not reply.get("started"):
            raise X11Error(f"'{argv[0]}' could not be started: {reply.get('error')}")
        if reply.get("timed_out"):
            raise X11Timeout(f"'{argv[0]}' did not finish within {timeout:g} s")
        if reply.get("stdout_truncated"):
            raise X11Error(f"'{argv[0]}' printed more than {max_output} bytes")
        return XResult(str(reply.get("stdout", "")), str(reply.get("stderr", "")), reply.get("exit_code"), False)

    def launch(self, argv: list[str], *, name: str, cwd: str | None = None,
               env: dict[str, str] | None = None) -> int:
        """Start a program on the display (a child of the supervisor); its pid in the jail."""
        reply = self._request("spawn", 10.0, argv=argv, cwd=cwd, env=self.display.env(**(env or {})),
                              log=f"{self.run_dir}/{name}.log")
        if not reply.get("started"):
            raise X11Error(f"'{argv[0]}' could not be started: {reply.get('error')}")
        self.display.pids.append([int(reply["pid"]), name])
        return int(reply["pid"])

    def wait_until(self, argv: list[str], timeout: float, what: str) -> None:
        """Poll ``argv`` inside the jail until it succeeds, in one round trip."""
        ticks = str(max(1, int(timeout / 0.02)))
        res = self.run(["/bin/sh", "-c", _WAIT_COMMAND, "sh", ticks, *argv], timeout=timeout + 2)
        if res.returncode != 0:
            raise X11Error(f"{what} did not appear within {timeout:g} s")

    def alive(self) -> bool:
        """True while the display's X server runs."""
        xvfb = next((pid for pid, name in self.display.pids if name == "Xvfb"), None)
        if xvfb is None:
            return False
        try:
            return bool(self._request("alive", 5.0, pid=xvfb).get("alive"))
        except X11Error:
            return False

    def grab_png(self, timeout: float, compress_level: int = 6) -> bytes:
        """The whole screen as PNG, grabbed inside the jail (Pillow over XCB)."""
        res = self.run([sys.executable, "-I", "-c", _GRAB, self.display.name, str(compress_level)],
                       timeout=timeout, max_output=_MAX_SCREENSHOT)
        if res.returncode != 0:
            raise X11Error(f"cannot grab display {self.display.name}: {res.stderr.strip()[-300:]}")
        try:
            return base64.b64decode(res.stdout, validate=True)
        except ValueError:
            raise X11Error("the screenshot grabber sent something that is not base64") from None

    def log_tail(self, name: str) -> str:
        try:
            res = self.run(["tail", "-c", "400", f"{self.run_dir}/{name}.log"], timeout=5)
        except X11Error:
            return "(no log)"
        return res.stdout.strip() or "(no output)"


def start_desktop(supervisor: ConfinedSession, width: int, height: int, *, depth: int = 24,
                  timeout: float = 15.0, private_tmp: bool = True, run_dir: str = _RUN_DIR) -> Desktop:
    """Start an ``Xvfb`` at ``width``×``height`` inside the session's jail.

    ``private_tmp``: the session has a /tmp of its own (a confined session), so display
    :0 is free; an unconfined one shares the host's and takes the first free number from
    :10, with its cookie and logs in ``run_dir`` (then a folder of its own).

    Raises:
        X11Error: no server came up within ``timeout`` (its log is quoted).
    """
    numbers = (_NUMBER,) if private_tmp else range(10, 110)
    for number in numbers:
        desktop, code = _try_display(supervisor, number, width, height, depth, timeout, run_dir)
        if code == 0:
            return desktop
        if code != 3 or private_tmp:  # 3: Xvfb exited (e.g. the number is taken): try the next
            break
    why = "exited" if code == 3 else f"did not start within {timeout:g} s"
    raise X11Error(f"Xvfb {why}: {desktop.log_tail('Xvfb')}")


def _try_display(supervisor: ConfinedSession, number: int, width: int, height: int, depth: int, timeout: float,
                 run_dir: str) -> tuple[Desktop, int]:
    """Start Xvfb on display ``number``; (the desktop, 0 when up / 3 when it exited / 4 on timeout)."""
    auth = f"{run_dir}/Xauthority"
    display = Display(number, width, height, auth, secrets.token_hex(12), started_at=time.time())
    desktop = Desktop(supervisor, display)
    cookie = secrets.token_hex(16)
    made = desktop.run(["/bin/sh", "-c", 'umask 077 && mkdir -p "$1" && xauth -q -f "$2" add "$3" . "$4"', "sh",
                        run_dir, auth, display.name, cookie], timeout=10)
    if made.returncode != 0:
        raise X11Error(f"the display cookie could not be made (is xauth installed?): {made.stderr.strip()[:300]}")
    pid = desktop.launch(["Xvfb", display.name, "-screen", "0", f"{width}x{height}x{depth}", "-nolisten", "tcp",
                          "-nolisten", "local", "-auth", auth, "-noreset"], name="Xvfb")
    ticks = str(max(1, int(timeout / 0.01)))
    ready = desktop.run(["/bin/sh", "-c", _WAIT_SOCKET, "sh", f"/tmp/.X11-unix/X{display.number}", str(pid), ticks,
                         f"/tmp/.X{display.number}-lock"], timeout=timeout + 2)
    return desktop, ready.returncode


def marker_pids(marker: str) -> list[int]:
    """Host pids of live processes whose environment carries ``marker`` (for operators
    and tests; the session's cgroup is what ends them)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X"):
            found.append(int(entry))
    return found
