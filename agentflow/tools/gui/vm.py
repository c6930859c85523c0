"""``vm``: a real headless desktop per session (Xvfb + openbox + xterm), driven like a
GUI agent drives a computer: screenshots in, mouse and keyboard out.

A session is a confined session (:mod:`agentflow.isolation`) whose supervisor runs a
private X display at the requested ``screen_size`` (default 1280×800), a window
manager and a terminal whose working directory is the session workspace. Everything on
the desktop — the X server, the terminal's shell, programs it or ``vm:open`` start,
and the ``xdotool``/``wmctrl``/screenshot commands of the tools — runs inside the
session's jail as the session's uid (see :mod:`.x11`), so the terminal is no more
than a ``bash`` session: it sees its workspace, a read-only system and a private
``/tmp``, never the server's data dir. Destroy (or expiry) kills the session's cgroup.

There is no pool of pre-started displays: a display belongs to one jail and one jail
to one session, and a jail's workspace is bound at start, so a display cannot be made
before its session exists. ``pool_size`` is accepted and ignored (logged). A session
starts in about half a second (jail, Xvfb, openbox, xterm).

``network`` is ``none`` by default (the desktop's programs reach nothing, not even the
host's loopback); set ``network: full`` to browse from the desktop. Options from
AgentFlow's docker VM config (``provider: docker``, ``os_type``, ``region`` …) are
accepted and ignored; ``setup`` (shell commands run on the desktop at session start)
is honoured.
"""
from __future__ import annotations

import functools
import logging
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ...isolation import Limits
from ...isolation.policy import LIMIT_KEYS
from ..base import Backend, BackendConfigError, SessionFailed, SessionInfo
from .chromium import JAIL_FLAGS, QUIET_FLAGS, find_chromium, font_caches
from .vmtools import VmToolsMixin
from .x11 import Desktop, Display, X11Error, start_desktop

log = logging.getLogger(__name__)

_IGNORED_KEYS = frozenset({"provider", "region", "os_type", "headless", "connection_type", "pool_reset",
                           "snapshot_name", "use_proxy", "client_password", "vm_path", "recording",
                           "recording_path", "pool_size"})
_REQUIRED_PROGRAMS = {"Xvfb": "xvfb", "xdotool": "xdotool", "wmctrl": "wmctrl", "xauth": "xauth"}
_MIN_SIDE, _MAX_SIDE = 200, 7680
# Chromium alone has a hundred threads, and the pids controller counts threads.
_DEFAULTS = Limits(memory_mb=3072, max_processes=2048, disk_mb=1024, file_size_mb=256, cpu_seconds=3600,
                   network="none")
_MAX_REPLY = 64 << 20  # a screenshot, base64


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
    config_keys = frozenset({"screen_size", "terminal", "window_manager", "chromium", "startup_timeout", "depth",
                             "setup", "apps", "start_url"}) | _IGNORED_KEYS | LIMIT_KEYS

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.screen_size = parse_screen_size(cfg.get("screen_size", [1280, 800]), "resource 'vm': screen_size")
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
            log.info("resource 'vm': runs a local Xvfb desktop in the session's sandbox; ignoring option(s): %s",
                     ", ".join(ignored + (["provider=docker"] if provider == "docker" else [])))
        self.window_manager = cfg.get("window_manager", "openbox")
        self.terminal = cfg.get("terminal", "xterm")
        self.chromium = cfg.get("chromium")
        self.setup = _as_list(cfg.get("setup"), "setup")
        self.default_apps = _as_list(cfg.get("apps"), "apps")
        self.default_url = cfg.get("start_url")
        self.confine = self.confinement(_DEFAULTS, extra_read_only=font_caches())

    # -- warmup ------------------------------------------------------------------
    def warmup(self) -> dict:
        missing = [f"{prog} (Debian package '{pkg}')" for prog, pkg in _REQUIRED_PROGRAMS.items()
                   if shutil.which(prog) is None]
        if self.window_manager and shutil.which(self.window_manager) is None:
            missing.append(f"window manager '{self.window_manager}'")
        if missing:
            raise BackendConfigError("the vm backend needs " + ", ".join(missing))
        return {"screen_size": list(self.screen_size), "sandbox": self.confine.describe()}

    # -- sessions ----------------------------------------------------------------
    def create_session(self, session: SessionInfo) -> None:
        cfg = session.config or {}
        t0 = time.monotonic()
        try:
            size = parse_screen_size(cfg.get("screen_size", self.screen_size), "config 'screen_size'")
        except ValueError as err:
            raise SessionFailed(str(err)) from None
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(session.workspace), "LANG": "C.UTF-8"}
        try:
            self.confine.start(session, env)
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003
            raise SessionFailed(str(err)) from None
        try:
            self._start_desktop(session, size, cfg)
        except (X11Error, OSError, ValueError) as err:
            self.confine.stop(session)
            raise SessionFailed(f"the desktop did not start: {err}") from None
        session.state["startup_ms"] = round((time.monotonic() - t0) * 1000, 1)

    def _start_desktop(self, session: SessionInfo, size: tuple[int, int], cfg: dict) -> None:
        supervisor = self.confine.attach(session, max_reply_bytes=_MAX_REPLY)
        private = self.confine.confined  # unconfined sessions share the host's /tmp
        desktop = start_desktop(supervisor, *size, depth=self.depth, timeout=self.startup_timeout,
                                private_tmp=private,
                                **({} if private else {"run_dir": f"{session.workspace}/.agentflow-x11"}))
        session.state["display"] = desktop.display.to_state()
        if self.window_manager:
            desktop.launch([self.window_manager], name="wm")
            desktop.wait_until(["wmctrl", "-m"], self.startup_timeout, "the window manager")
        if cfg.get("terminal", True) and self.terminal:
            self._start_terminal(desktop, session.workspace)
        for command in self.setup + _as_list(cfg.get("setup"), "setup", SessionFailed):
            desktop.launch(["/bin/sh", "-c", command], name="setup", cwd=str(session.workspace))
        for app in self.default_apps + _as_list(cfg.get("apps"), "apps", SessionFailed):
            self._open(desktop, app, session.workspace)
        url = cfg.get("start_url", self.default_url)
        if url:
            self._open(desktop, str(url), session.workspace)
        session.state["display"] = desktop.display.to_state()

    def destroy_session(self, session: SessionInfo) -> None:
        self.confine.stop(session)

    # -- helpers used by the tools ----------------------------------------------------
    def _display(self, session: SessionInfo) -> Desktop:
        display = Display.from_state(session.state.get("display"))
        gone = SessionFailed(f"the desktop of session {session.session_id} is no longer running; "
                             "destroy the session and create a new one")
        if display is None:
            raise gone
        try:
            desktop = Desktop(self.confine.attach(session, max_reply_bytes=_MAX_REPLY), display)
        except Exception:  # noqa: BLE001 - no sandbox recorded: the session has ended
            raise gone from None
        if not desktop.alive():
            raise gone
        return desktop

    def _start_terminal(self, desktop: Desktop, workspace: Path) -> None:
        argv = shlex.split(self.terminal) if isinstance(self.terminal, str) else list(self.terminal)
        xterm = Path(argv[0]).name == "xterm"
        if xterm:
            argv += ["-T", "Terminal", "-geometry", "110x32+12+12"]
            if _have_font("DejaVu Sans Mono"):
                argv += ["-fa", "DejaVu Sans Mono", "-fs", "11"]
        shell_env = {"HOME": str(workspace), "SHELL": "/bin/bash", "PS1": r"\u@vm:\w\$ "}
        desktop.launch(argv, name="terminal", cwd=str(workspace), env=shell_env)
        # Typing goes to the focused window: wait until the terminal has focus.
        check = (['sh', '-c', 'xdotool getwindowfocus getwindowname | grep -qx Terminal'] if xterm else
                 ['sh', '-c', 'n=$(xdotool getwindowfocus getwindowname) && [ -n "$n" ] && [ "$n" != Openbox ]'])
        try:
            desktop.wait_until(check, self.startup_timeout, "the terminal window")
        except X11Error as err:
            raise X11Error(f"{err}: {desktop.log_tail('terminal')}") from None

    def _open(self, desktop: Desktop, target: str, workspace: Path) -> tuple[int, list[str]]:
        """Start an app or open a URL/file in Chromium on the desktop; (pid, argv)."""
        target = target.strip()
        aliases = {"terminal": self.terminal, "xterm": self.terminal}
        if target.lower() in ("browser", "chromium", "web browser") or "://" in target or target.endswith(
                (".html", ".htm")):
            chromium = find_chromium(self.chromium)
            if chromium is None:
                raise ValueError("no Chromium is installed (Debian package 'chromium')")
            argv = [chromium, *JAIL_FLAGS, *QUIET_FLAGS, f"--user-data-dir={workspace}/.chromium-vm",
                    f"--window-size={desktop.width},{desktop.height - 40}", "--window-position=0,0"]
            if target.lower() not in ("browser", "chromium", "web browser"):
                argv.append(target if "://" in target else Path(workspace, target).as_uri())
        else:
            argv = shlex.split(aliases.get(target.lower(), target))
            if not argv or shutil.which(argv[0]) is None:
                raise ValueError(f"'{target}' is not an installed program (try 'terminal', 'browser' or a URL)")
        try:
            pid = desktop.launch(argv, name=Path(argv[0]).name, cwd=str(workspace))
        except X11Error as err:
            raise ValueError(str(err)) from None
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
