"""``vm``: a real headless desktop per session (Xvfb + openbox + xterm), driven like a
GUI agent drives a computer: screenshots in, mouse and keyboard out.

A session is a private X display at the requested ``screen_size`` (default 1280×800)
with a window manager and a terminal whose working directory is the session
workspace. The display is plain data in ``session.state["display"]`` (number, pids,
cookie file), so every server process can drive it with ``xdotool``/``wmctrl`` and grab
it with Pillow; destroy (or expiry) ends the X server and everything started on it.

``warmup`` pre-starts ``pool_size`` displays (X server and window manager) of the
default size, shared by all server processes (see :mod:`._vmpool`).

Session processes run as the server's user (root under CI): the desktop's terminal is
a root shell, like the one AgentFlow's docker VM gives. Only holders of the server's
X cookie can reach a display, so the bash backend's per-session users cannot.

Options from AgentFlow's docker VM config (``provider: docker``, ``os_type``, ``region``,
``snapshot_name``, ``vm_path``, ``client_password``, ``use_proxy``, ``recording`` …) are
accepted and ignored — this backend always runs a local Xvfb desktop — and a note is
logged at start; ``setup`` (shell commands run on the desktop at session start) is honoured.
"""
from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ._chromium import QUIET_FLAGS, find_chromium, sandbox_flags
from ._vmpool import DisplayPool
from ._x11 import Display, X11Error, ensure_cookie, is_alive, launch, run_x, start_display, stop_display
from ._vmtools import VmToolsMixin
from .base import Backend, BackendConfigError, SessionFailed, SessionInfo

log = logging.getLogger(__name__)

_IGNORED_KEYS = frozenset({"provider", "region", "os_type", "headless", "connection_type", "pool_reset",
                           "snapshot_name", "use_proxy", "client_password", "vm_path", "recording",
                           "recording_path"})
_REQUIRED_PROGRAMS = {"Xvfb": "xvfb", "xdotool": "xdotool", "wmctrl": "wmctrl"}
_MIN_SIDE, _MAX_SIDE = 200, 7680


def parse_screen_size(value, where: str) -> tuple[int, int]:
    """``[w, h]``, ``"WxH"`` or ``{"width", "height"}`` → ``(w, h)``; ValueError names ``where``."""
    if isinstance(value, str) and "x" in value.lower():
        value = value.lower().split("x", 1)
    if isinstance(value, dict):
        value = [value.get("width"), value.get("height")]
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be [width, height], got {value!r}") from None
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise ValueError(f"{where} must be between {_MIN_SIDE} and {_MAX_SIDE} pixels per side, got {width}x{height}")
    return width, height


class VmBackend(VmToolsMixin, Backend):
    name = "vm"
    description = "A headless Linux desktop per session (Xvfb, openbox, xterm) driven by mouse and keyboard"
    config_keys = frozenset({"screen_size", "pool_size", "terminal", "window_manager", "chromium",
                             "startup_timeout", "depth", "setup", "apps", "start_url"}) | _IGNORED_KEYS

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.screen_size = parse_screen_size(cfg.get("screen_size", [1280, 800]), "resource 'vm': screen_size")
            self.pool_size = int(cfg.get("pool_size", 2))
            self.startup_timeout = float(cfg.get("startup_timeout", 20))
            self.depth = int(cfg.get("depth", 24))
        except (TypeError, ValueError) as err:
            raise BackendConfigError(f"resource 'vm': {err}") from None
        provider = str(cfg.get("provider", "xvfb")).lower()
        if provider not in ("xvfb", "local", "docker"):
            raise BackendConfigError(f"resource 'vm': provider '{provider}' is not available; this AgentFlow runs "
                                     "the desktop on a local Xvfb (provider 'xvfb'; 'docker' and 'local' are "
                                     "accepted as the same)")
        if cfg.get("headless") is False:
            raise BackendConfigError("resource 'vm': headless false is not supported; the desktop runs on Xvfb")
        ignored = sorted(k for k in cfg if k in _IGNORED_KEYS and k not in ("provider", "headless"))
        if ignored or provider == "docker":
            log.info("resource 'vm': runs a local Xvfb desktop; ignoring option(s) of AgentFlow's VM provider: %s",
                     ", ".join(ignored + (["provider=docker"] if provider == "docker" else [])))
        self.window_manager = cfg.get("window_manager", "openbox")
        self.terminal = cfg.get("terminal", "xterm")
        self.chromium = cfg.get("chromium")
        self.setup = _as_list(cfg.get("setup"), "setup")
        self.default_apps = _as_list(cfg.get("apps"), "apps")
        self.default_url = cfg.get("start_url")
        home = Path(self.context.data_dir) / "vm"
        self.home = home
        self.pool = DisplayPool(home / "pool", self.screen_size, self.pool_size, self._start_desktop)

    # -- warmup ------------------------------------------------------------------
    def warmup(self) -> dict:
        missing = [f"{prog} (Debian package '{pkg}')" for prog, pkg in _REQUIRED_PROGRAMS.items()
                   if shutil.which(prog) is None]
        if self.window_manager and shutil.which(self.window_manager) is None:
            missing.append(f"window manager '{self.window_manager}'")
        if missing:
            raise BackendConfigError("the vm backend needs " + ", ".join(missing))
        self._cookie()
        t0 = time.monotonic()
        started = self.pool.fill()
        return {"pool_size": self.pool_size, "pool_waiting": self.pool.waiting(), "pool_started": started,
                "screen_size": list(self.screen_size), "seconds": round(time.monotonic() - t0, 3)}

    def _cookie(self) -> str:
        auth = ensure_cookie(self.home / "Xauthority")
        # Pillow's screen grab (XCB) finds the cookie through XAUTHORITY only.
        os.environ["XAUTHORITY"] = auth
        return auth

    def _start_desktop(self, width: int, height: int) -> Display:
        """An X server with the window manager running (no terminal yet)."""
        run_dir = self.home / "displays" / f"{os.getpid()}-{time.monotonic_ns()}"
        display = start_display(width, height, auth=self._cookie(), run_dir=run_dir, depth=self.depth,
                                timeout=self.startup_timeout)
        try:
            if self.window_manager:
                launch(display, [self.window_manager], name="wm")
                deadline = time.monotonic() + self.startup_timeout
                while run_x(display, ["wmctrl", "-m"], timeout=5).returncode != 0:
                    if time.monotonic() > deadline:
                        raise X11Error(f"the window manager did not start: {_log_tail(display, 'wm')}")
                    time.sleep(0.03)
        except BaseException:
            stop_display(display)
            raise
        return display

    # -- sessions ----------------------------------------------------------------
    def create_session(self, session: SessionInfo) -> None:
        cfg = session.config or {}
        t0 = time.monotonic()
        try:
            size = parse_screen_size(cfg.get("screen_size", self.screen_size), "config 'screen_size'")
        except ValueError as err:
            raise SessionFailed(str(err)) from None
        display, pooled = None, False
        try:
            if size == tuple(self.screen_size):
                display = self.pool.claim()
                pooled = display is not None
            if display is None:
                display = self._start_desktop(*size)
            session.state["display"] = display.to_state()
            if cfg.get("terminal", True) and self.terminal:
                self._start_terminal(display, session.workspace)
            for command in self.setup + _as_list(cfg.get("setup"), "setup", SessionFailed):
                launch(display, ["sh", "-c", command], name="setup", cwd=str(session.workspace),
                       env={"HOME": str(session.workspace)})
            for app in self.default_apps + _as_list(cfg.get("apps"), "apps", SessionFailed):
                self._open(display, app, session.workspace)
            url = cfg.get("start_url", self.default_url)
            if url:
                self._open(display, str(url), session.workspace)
        except (X11Error, OSError, ValueError) as err:
            if display is not None:
                stop_display(display)
            raise SessionFailed(f"the desktop did not start: {err}") from None
        session.state["display"] = display.to_state()
        session.state["pooled"] = pooled
        session.state["startup_ms"] = round((time.monotonic() - t0) * 1000, 1)
        self.pool.refill_soon()

    def destroy_session(self, session: SessionInfo) -> None:
        display = Display.from_state(session.state.get("display"))
        if display is not None:
            stop_display(display)
            shutil.rmtree(display.run_dir, ignore_errors=True)

    def close(self) -> None:
        """Waiting displays end with the server's master (their watchdog), not with a
        worker: a recycled worker must not empty the pool the others use."""

    # -- helpers used by the tools ----------------------------------------------------
    def _display(self, session: SessionInfo) -> Display:
        display = Display.from_state(session.state.get("display"))
        if display is None or not is_alive(display):
            raise SessionFailed(f"the desktop of session {session.session_id} is no longer running; "
                                "destroy the session and create a new one")
        return display

    def _start_terminal(self, display: Display, workspace: Path) -> None:
        argv = shlex.split(self.terminal) if isinstance(self.terminal, str) else list(self.terminal)
        if Path(argv[0]).name == "xterm":
            argv += ["-T", "Terminal", "-geometry", "110x32+12+12"]
            if _have_font("DejaVu Sans Mono"):
                argv += ["-fa", "DejaVu Sans Mono", "-fs", "11"]
        shell_env = {"HOME": str(workspace), "SHELL": "/bin/bash", "PS1": r"\u@vm:\w\$ "}
        launch(display, argv, name="terminal", cwd=str(workspace), env=shell_env)
        deadline = time.monotonic() + self.startup_timeout
        while True:  # typing goes to the focused window: wait until the terminal has focus
            out = run_x(display, ["xdotool", "getwindowfocus", "getwindowname"], timeout=5).stdout
            if "Terminal" in out or (Path(argv[0]).name != "xterm" and out.strip() and "Openbox" not in out):
                return
            if time.monotonic() > deadline:
                raise X11Error(f"the terminal window did not appear: {_log_tail(display, 'terminal')}")
            time.sleep(0.03)

    def _open(self, display: Display, target: str, workspace: Path) -> tuple[int, list[str]]:
        """Start an app or open a URL/file in Chromium on the display; (pid, argv)."""
        target = target.strip()
        aliases = {"terminal": self.terminal, "xterm": self.terminal}
        if target.lower() in ("browser", "chromium", "web browser") or "://" in target or target.endswith(
                (".html", ".htm")):
            chromium = find_chromium(self.chromium)
            if chromium is None:
                raise ValueError("no Chromium is installed (Debian package 'chromium')")
            argv = [chromium, *sandbox_flags(), *QUIET_FLAGS, f"--user-data-dir={workspace}/.chromium-vm",
                    f"--window-size={display.width},{display.height - 40}", "--window-position=0,0"]
            if target.lower() not in ("browser", "chromium", "web browser"):
                argv.append(target if "://" in target else Path(workspace, target).resolve().as_uri())
        else:
            argv = shlex.split(aliases.get(target.lower(), target))
            if not argv or shutil.which(argv[0]) is None:
                raise ValueError(f"'{target}' is not an installed program (try 'terminal', 'browser' or a URL)")
        pid = launch(display, argv, name=Path(argv[0]).name, cwd=str(workspace),
                     env={"HOME": str(workspace)})
        return pid, argv


def _as_list(value, where: str, error: type[Exception] = BackendConfigError) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise error(f"'{where}' must be a list of strings")


@functools.lru_cache(maxsize=8)
def _have_font(family: str) -> bool:
    try:
        out = subprocess.run(["fc-list", family], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(out.strip())


def _log_tail(display: Display, name: str) -> str:
    try:
        return Path(display.run_dir, f"{name}.log").read_text(errors="replace")[-400:].strip() or "(no output)"
    except OSError:
        return "(no log)"
